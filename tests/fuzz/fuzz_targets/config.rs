//! Config parser: arbitrary text (and `--set` overrides made from it) never panics; it parses
//! into a validated experiment or gives an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lth::config::Experiment;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, sets) = text.split_once('\n').unwrap_or((text, ""));
    let sets: Vec<String> = sets.lines().map(String::from).collect();
    if let Ok(exp) = Experiment::from_text(config, "fuzz input", &sets) {
        // A valid config survives its own round trip.
        let again = Experiment::from_text(&exp.to_toml(), "round trip", &[]).expect("round trip");
        assert_eq!(again, exp);
    }
});
