//! Content hash of a resolved config, used to name run dirs (`runs/<name>-<hash>`).
//!
//! Like OpenLTH, only values that differ from the defaults enter the hash, so adding a new key
//! with a default later keeps existing run dirs valid. `data.dir` (where the files are) does not
//! enter it: the same experiment on the same data moved elsewhere is the same run; nor does
//! `[stability]` (what a later study measures on the run, not the run).

use sha2::{Digest, Sha256};

use super::Experiment;

/// Hex digest (12 characters) of the config's non-default values.
pub fn config_hash(exp: &Experiment) -> String {
    let mut table = exp.to_table();
    if let Some(toml::Value::Table(data)) = table.get_mut("data") {
        data.remove("dir");
    }
    table.remove("stability");
    let defaults = Experiment::default().to_table();
    let diff = non_default(&table, &defaults);
    let canonical = toml::to_string(&diff).expect("table serializes");
    hex_sha256(&canonical)[..12].to_string()
}

/// Hex SHA-256 of `text`.
fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first line of a run dir's `config.toml`, before the SHA-256 of the text after it:
/// a saved config whose text no longer matches is refused (a file cut at a line end still
/// parses, to defaults for the keys cut off).
const DIGEST_LINE: &str = "# written by lth; sha256 of the lines below: ";

/// `toml` after a [`DIGEST_LINE`] holding its SHA-256, as a run dir saves it.
pub fn with_digest_line(toml: &str) -> String {
    format!("{DIGEST_LINE}{}\n{toml}", hex_sha256(toml))
}

/// Whether saved config text still matches the digest on its first line (text without one,
/// from before it was recorded, passes).
pub fn digest_line_holds(text: &str) -> bool {
    match text.split_once('\n') {
        Some((first, rest)) => first
            .strip_prefix(DIGEST_LINE)
            .is_none_or(|written| written.trim() == hex_sha256(rest)),
        None => true,
    }
}

/// Keeps the entries of `table` that differ from `defaults`, recursing into sub-tables.
fn non_default(table: &toml::Table, defaults: &toml::Table) -> toml::Table {
    let mut out = toml::Table::new();
    for (key, value) in table {
        match (value, defaults.get(key)) {
            (toml::Value::Table(sub), Some(toml::Value::Table(sub_default))) => {
                let d = non_default(sub, sub_default);
                if !d.is_empty() {
                    out.insert(key.clone(), toml::Value::Table(d));
                }
            }
            (v, Some(default)) if v == default => {}
            (v, _) => {
                out.insert(key.clone(), v.clone());
            }
        }
    }
    out
}
