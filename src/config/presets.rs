//! Presets: the TOML files of `configs/`, bundled into the binary so it runs from anywhere.

const PRESETS: &[(&str, &str)] = &[
    ("smoke", include_str!("../../configs/smoke.toml")),
    ("demo", include_str!("../../configs/demo.toml")),
    (
        "frankle2019-lenet",
        include_str!("../../configs/frankle2019-lenet.toml"),
    ),
    ("compare", include_str!("../../configs/compare.toml")),
    (
        "compare-oneshot",
        include_str!("../../configs/compare-oneshot.toml"),
    ),
    ("renda2020", include_str!("../../configs/renda2020.toml")),
    ("gradual", include_str!("../../configs/gradual.toml")),
    (
        "frankle2019-conv2",
        include_str!("../../configs/frankle2019-conv2.toml"),
    ),
    (
        "frankle2019-conv4",
        include_str!("../../configs/frankle2019-conv4.toml"),
    ),
    (
        "frankle2019-conv6",
        include_str!("../../configs/frankle2019-conv6.toml"),
    ),
    ("resnet20", include_str!("../../configs/resnet20.toml")),
];

/// The TOML text of a preset, if it exists.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Names of all bundled presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}
