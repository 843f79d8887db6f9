//! Config resolution: presets match the papers' hyperparameters, `--set` takes TOML values
//! (and plain strings), and the run-dir hash is pinned so it never changes by accident.

use lth::config::{config_hash, ArmKind, ConfigSource, Experiment, OptimizerKind, PruneScope};

fn preset(name: &str, sets: &[&str]) -> Experiment {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Experiment::resolve(&ConfigSource::Preset(name.into()), &sets).unwrap()
}

#[test]
fn frankle2019_lenet_preset_has_the_papers_hyperparameters() {
    // Frankle & Carbin 2019, Figure 2 / Appendix: LeNet-300-100, Adam 1.2e-3, batch 60,
    // 50,000 iterations, layerwise pruning fc 20% / output 10%, 5,000 validation examples,
    // evaluation every 100 iterations.
    let e = preset("frankle2019-lenet", &[]);
    assert_eq!(e.train.optimizer, OptimizerKind::Adam);
    assert_eq!(e.train.lr, 1.2e-3);
    assert_eq!(e.train.batch_size, 60);
    assert_eq!(e.train.iterations, 50_000);
    assert_eq!(e.train.eval_every, 100);
    assert_eq!(e.data.validation_size, 5000);
    assert_eq!(e.prune.scope, PruneScope::Layerwise);
    let net = lth::model::Lenet::new(784, 10);
    let spec = |name: &str| {
        let layout = lth::model::Network::layout(&net);
        layout.specs()[layout.index_of(name).unwrap()].clone()
    };
    assert_eq!(lth::prune::fraction_for(&e.prune, &spec("fc1.weight")), 0.2);
    assert_eq!(lth::prune::fraction_for(&e.prune, &spec("fc2.weight")), 0.2);
    assert_eq!(lth::prune::fraction_for(&e.prune, &spec("fc3.weight")), 0.1);
    // The paper's arm and its two controls.
    let kinds: Vec<ArmKind> = e.arms.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [ArmKind::Rewind, ArmKind::Reinit, ArmKind::RandomPrune]
    );
    assert_eq!(e.arms[0].rewind_iteration, 0);
    assert!(e.arms[1..]
        .iter()
        .all(|a| a.sibling.as_deref() == Some("rewind")));
}

#[test]
fn smoke_and_demo_presets_have_the_promised_size() {
    let smoke = preset("smoke", &[]);
    assert!(smoke.prune.rounds >= 3 && smoke.seeds.len() == 2);
    let demo = preset("demo", &[]);
    assert!(demo.prune.rounds >= 6 && demo.seeds.len() == 2);
    assert_eq!(demo.name, "demo", "a preset's name defaults to the preset");
}

#[test]
fn set_takes_toml_values_and_plain_strings() {
    let e = preset(
        "smoke",
        &[
            "seeds=[0,1,2]",
            "train.iterations=5000",
            "data.dir=/some/where/fashion",
            "train.lr=3e-4",
            "prune.strategy=\"global\"",
            "arms.0.rewind_iteration=100",
            "prune.layer_fractions={}",
        ],
    );
    assert_eq!(e.seeds, vec![0, 1, 2]);
    assert_eq!(e.train.iterations, 5000);
    assert_eq!(e.data.dir, "/some/where/fashion");
    assert_eq!(e.train.lr, 3e-4);
    assert_eq!(e.prune.scope, PruneScope::Global);
    assert_eq!(e.arms[0].rewind_iteration, 100);
    // A bare word is a string too.
    let e = preset("smoke", &["name=my-study", "prune.strategy=layerwise"]);
    assert_eq!(e.name, "my-study");
    assert_eq!(e.prune.scope, PruneScope::Layerwise);
}

#[test]
fn later_sets_win_and_errors_name_the_key() {
    let e = preset("smoke", &["train.iterations=10", "train.iterations=20"]);
    assert_eq!(e.train.iterations, 20);
    let err = Experiment::resolve(
        &ConfigSource::Preset("smoke".into()),
        &["prune.fractoin=0.3".into()],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("prune.fractoin"), "{err:#}");
    let err = Experiment::resolve(
        &ConfigSource::Preset("smoke".into()),
        &["arms.3.name=x".into()],
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("index 3 in `arms.3.name` is out of range"),
        "{err:#}"
    );
}

#[test]
fn config_file_name_defaults_to_its_stem_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("my-exp.toml");
    std::fs::write(&path, "seeds = [4]\n[train]\niterations = 300\n").unwrap();
    let e = Experiment::resolve(&ConfigSource::File(path), &[]).unwrap();
    assert_eq!(e.name, "my-exp");
    assert_eq!(e.seeds, vec![4]);
    let saved = tmp.path().join("config.toml");
    std::fs::write(&saved, e.to_toml()).unwrap();
    assert_eq!(Experiment::from_saved(&saved).unwrap(), e);
}

#[test]
fn run_dir_hash_is_pinned_and_ignores_the_data_folder() {
    // Pinned values: changing them renames every existing run dir; do it only on purpose.
    // The default config has no non-default value: the SHA-256 of the empty string.
    assert_eq!(config_hash(&Experiment::default()), "e3b0c44298fc");
    let smoke = preset("smoke", &[]);
    assert_eq!(config_hash(&smoke), "3557f1be9e30");
    let moved = preset("smoke", &["data.dir=/elsewhere"]);
    assert_eq!(
        config_hash(&moved),
        config_hash(&smoke),
        "data.dir is not hashed"
    );
    let other = preset("smoke", &["train.lr=0.002"]);
    assert_ne!(config_hash(&other), config_hash(&smoke));
    // TF32 changes GPU results, so opting in names another run.
    let tf32 = preset("smoke", &["train.tf32=true"]);
    assert!(tf32.train.tf32);
    assert_ne!(config_hash(&tf32), config_hash(&smoke));
    // Setting a key to its default value does not change the hash.
    let same = preset("smoke", &["train.momentum=0.9"]);
    assert_eq!(config_hash(&same), config_hash(&smoke));
    // What a later study measures is not part of the run.
    let study = preset("smoke", &["stability.points=11", "stability.ks=[0,100]"]);
    assert_eq!(study.stability.points, 11);
    assert_eq!(
        config_hash(&study),
        config_hash(&smoke),
        "[stability] is not hashed"
    );
}

#[test]
fn learning_rate_warms_up_linearly_then_steps_down_at_milestones() {
    let e = preset(
        "smoke",
        &[
            "train.warmup_iterations=4",
            "train.lr_milestones=[10, 20]",
            "train.lr_gamma=0.5",
        ],
    );
    let f: Vec<f64> = [0, 1, 3, 4, 9, 10, 19, 20, 100]
        .iter()
        .map(|&t| e.train.lr_factor(t))
        .collect();
    assert_eq!(f, [0.25, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]);
}

#[test]
fn one_shot_targets_set_the_rounds_the_resolved_config_shows() {
    let e = preset("compare-oneshot", &["prune.targets=[50.0, 20.0, 5.0]"]);
    assert_eq!(e.prune.rounds, 3);
    assert_eq!(e.pruned_rounds(), 3);
    assert!(e.to_toml().contains("rounds = 3"), "{}", e.to_toml());
    // Without targets the rounds stay as written.
    assert_eq!(preset("compare-oneshot", &[]).prune.rounds, 8);
    // The gradual schedule's pruning steps (500, 750, ..., 3000: 11) set them too, so a
    // `prune.rounds` it ignores leaves the run dir as it is.
    let gradual = preset("gradual", &[]);
    assert_eq!(gradual.prune.rounds, 11);
    assert_eq!(gradual.total_rounds(), 12);
    let ignored = preset("gradual", &["prune.rounds=3"]);
    assert_eq!(config_hash(&ignored), config_hash(&gradual));
}

#[test]
fn set_reaches_a_layer_fractions_entry_by_its_tidy_column_name() {
    // `prune.layer_fractions.fc3.weight` is how the tidy data names the key; the tensor name
    // holds a dot, which splitting the key at every dot made unreachable.
    for key in [
        "prune.layer_fractions.fc3.weight",
        "prune.layer_fractions.\"fc3.weight\"",
    ] {
        let e = preset("smoke", &[&format!("{key}=0.5")]);
        assert_eq!(
            e.prune.layer_fractions.get("fc3.weight"),
            Some(&0.5),
            "{key}"
        );
        assert_eq!(e.prune.layer_fractions.len(), 1, "{key}");
    }
}

#[test]
fn every_presets_pruning_settings_fit_its_model() {
    // Each preset's default data is Fashion-MNIST (1 x 28 x 28, 10 classes); the checks `run`
    // and `lth config` make against the model (tensor names, per-kind fractions that reach a
    // tensor, exclusions) pass for every preset.
    for name in lth::config::preset_names() {
        let e = preset(name, &[]);
        let net = lth::model::build(&e.model, [1, 28, 28], 10).unwrap();
        let groups = lth::prune::groups(net.layout(), &e.prune);
        assert!(groups.is_ok(), "{name}: {:?}", groups.err());
    }
}

#[test]
fn settings_that_would_do_nothing_are_refused_in_new_configs_but_not_in_saved_ones() {
    // A milestone at or past the end of training never applies: a new config is refused, but
    // a run dir's saved config from before the check stays readable (reports, resumes).
    let text = "[train]\niterations = 100\nlr_milestones = [100]\n";
    let err = Experiment::from_text(text, "test config", &[]).unwrap_err();
    assert!(err.to_string().contains("never reaches it"), "{err:#}");
    let saved = preset("smoke", &["train.iterations=100"])
        .to_toml()
        .replace("lr_milestones = []", "lr_milestones = [100]");
    assert!(saved.contains("lr_milestones = [100]"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, saved).unwrap();
    let e = Experiment::from_saved(&path).unwrap();
    assert_eq!(e.train.lr_milestones, [100]);
}

#[test]
fn unset_removes_a_key_or_an_arm_so_presets_can_drop_settings() {
    // frankle2019-conv2 sets per-kind fractions, which global pruning refuses; --unset drops
    // them (their defaults, unset, apply) before the --set switches the strategy.
    let source = ConfigSource::Preset("frankle2019-conv2".into());
    let unsets: Vec<String> = [
        "prune.conv_fraction",
        "prune.fc_fraction",
        "prune.output_fraction",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sets = vec!["prune.strategy=\"global\"".to_string()];
    let e = Experiment::resolve_with(&source, &unsets, &sets).unwrap();
    assert_eq!(e.prune.scope, PruneScope::Global);
    assert_eq!(
        (
            e.prune.conv_fraction,
            e.prune.fc_fraction,
            e.prune.output_fraction
        ),
        (None, None, None)
    );
    // A list entry: compare without its last arm.
    let compare = ConfigSource::Preset("compare".into());
    let all = Experiment::resolve(&compare, &[]).unwrap();
    let fewer = Experiment::resolve_with(&compare, &["arms.5".to_string()], &[]).unwrap();
    assert_eq!(fewer.arms.len(), all.arms.len() - 1);
    assert_eq!(fewer.arms[..], all.arms[..all.arms.len() - 1]);
    // A key the config does not set is named.
    let err = Experiment::resolve_with(&compare, &["train.nope".to_string()], &[]).unwrap_err();
    assert!(
        format!("{err:#}").contains("--unset `train.nope`"),
        "{err:#}"
    );
}
