//! Presets: the TOML files of `configs/`, bundled into the binary so it runs from anywhere.

/// (name, one-line summary, TOML text).
const PRESETS: &[(&str, &str, &str)] = &[
    (
        "smoke",
        "quickest real run: LeNet-300-100, 2 seeds, 3 rounds (~15 s on 2 cores)",
        include_str!("../../configs/smoke.toml"),
    ),
    (
        "demo",
        "the demo: LeNet-300-100, 2 seeds, 8 rounds of 20% (~1¼ min on 2 cores)",
        include_str!("../../configs/demo.toml"),
    ),
    (
        "frankle2019-lenet",
        "Frankle & Carbin 2019 LeNet-300-100: 5 seeds, 20 rounds, rewind + controls",
        include_str!("../../configs/frankle2019-lenet.toml"),
    ),
    (
        "frankle2020-lenet",
        "Frankle et al. 2020 instability: LeNet, 3 seeds, ticket at 3.5%, lth stability",
        include_str!("../../configs/frankle2020-lenet.toml"),
    ),
    (
        "compare",
        "every retraining strategy side by side, LeNet-300-100, 2 seeds, 8 rounds",
        include_str!("../../configs/compare.toml"),
    ),
    (
        "compare-oneshot",
        "the compare arms with one-shot pruning to the iterative sparsities",
        include_str!("../../configs/compare-oneshot.toml"),
    ),
    (
        "renda2020",
        "Renda et al. 2020: weight rewinding vs lr-rewinding vs fine-tuning, SGD",
        include_str!("../../configs/renda2020.toml"),
    ),
    (
        "at-init",
        "snip, grasp, synflow, magnitude and random pruning at init beside IMP, LeNet",
        include_str!("../../configs/at-init.toml"),
    ),
    (
        "criteria",
        "one-shot to 50-2% with finetune and rewind arms; run once per prune.criterion",
        include_str!("../../configs/criteria.toml"),
    ),
    (
        "l1",
        "IMP with L1 regularization (train.l1 = 1e-4), LeNet; rerun with train.l1=0",
        include_str!("../../configs/l1.toml"),
    ),
    (
        "structured",
        "whole neurons (l1) against single weights, LeNet, 2 seeds, 10 rounds",
        include_str!("../../configs/structured.toml"),
    ),
    (
        "structured-conv2",
        "whole filters (l1) against single weights, Conv-2, 2 seeds, 5 rounds",
        include_str!("../../configs/structured-conv2.toml"),
    ),
    (
        "sparse-training",
        "static, SET, RigL, SNFS, 5x SET and RigL beside a one-shot ticket at 80/90/98%",
        include_str!("../../configs/sparse-training.toml"),
    ),
    (
        "zhou2019-lenet",
        "Zhou et al. 2019: ticket, reinit, mask-1 actions on LeNet; a run per criterion",
        include_str!("../../configs/zhou2019-lenet.toml"),
    ),
    (
        "zhou2019-supermask",
        "Zhou et al. 2019 supermasks: one-shot LeNet tickets 50-2%, then lth supermask",
        include_str!("../../configs/zhou2019-supermask.toml"),
    ),
    (
        "gradual",
        "Zhu & Gupta 2017 gradual magnitude pruning to 90% in one run",
        include_str!("../../configs/gradual.toml"),
    ),
    (
        "frankle2019-conv2",
        "Frankle & Carbin 2019 Conv-2: rewind + controls (GPU)",
        include_str!("../../configs/frankle2019-conv2.toml"),
    ),
    (
        "frankle2019-conv4",
        "Frankle & Carbin 2019 Conv-4: rewind + controls (GPU)",
        include_str!("../../configs/frankle2019-conv4.toml"),
    ),
    (
        "frankle2019-conv6",
        "Frankle & Carbin 2019 Conv-6: rewind + controls (GPU)",
        include_str!("../../configs/frankle2019-conv6.toml"),
    ),
    (
        "resnet20",
        "CIFAR ResNet-20, OpenLTH schedule, late rewinding to 2,000 vs to 0 (GPU)",
        include_str!("../../configs/resnet20.toml"),
    ),
];

/// The TOML text of a preset, if it exists.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, t)| *t)
}

/// Names of all bundled presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _, _)| *n).collect()
}

/// A preset's one-line summary, if it exists (`lth presets`).
pub fn preset_summary(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_has_a_short_summary_and_its_config_file() {
        for name in preset_names() {
            let summary = preset_summary(name).unwrap();
            assert!(
                (10..=80).contains(&summary.chars().count()),
                "{name}: {summary}"
            );
            let text = preset_text(name).unwrap();
            assert!(
                text.starts_with(&format!("# {name}:")),
                "{name}: configs/{name}.toml"
            );
        }
        assert_eq!(preset_summary("nope"), None);
    }
}
