//! `lth export` writes one replica's masked weights and masks in PyTorch layout; PyTorch's
//! `safetensors.torch.load_file` and an `nn.Linear` stack with those names evaluate it to the
//! test accuracy recorded in rounds.csv.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::{lth, read_csv, small_config, write_dataset};

/// Python with torch and safetensors: `LTH_PYTHON`, else the project's venv.
fn python() -> PathBuf {
    std::env::var_os("LTH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".venv/bin/python"))
}

const EVALUATE: &str = r#"
import struct, sys
import torch
from safetensors.torch import load_file

path, images_path, labels_path = sys.argv[1:4]
t = load_file(path)
def idx(p):
    b = open(p, "rb").read()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return torch.frombuffer(bytearray(b[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)
x = idx(images_path).reshape(-1, 784).float() / 255.0
y = idx(labels_path).long()
net = torch.nn.Sequential()
net.add_module("fc1", torch.nn.Linear(784, 300))
net.add_module("relu1", torch.nn.ReLU())
net.add_module("fc2", torch.nn.Linear(300, 100))
net.add_module("relu2", torch.nn.ReLU())
net.add_module("fc3", torch.nn.Linear(100, 10))
net.load_state_dict({k: v for k, v in t.items() if not k.endswith("_mask")})
for name in ["fc1", "fc2", "fc3"]:
    w, m = t[name + ".weight"], t[name + ".weight_mask"]
    assert w.shape == m.shape, name
    assert set(m.unique().tolist()) <= {0.0, 1.0}, name
    assert (w[m == 0] == 0).all(), name
with torch.no_grad():
    acc = (net(x).argmax(1) == y).float().mean().item()
print(f"{acc:.6f} {int(t['fc1.weight_mask'].sum().item())} {tuple(t['fc1.weight'].shape)}")
"#;

#[test]
fn exported_replica_evaluates_in_pytorch_to_the_recorded_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 700, 200, false);
    std::fs::write(tmp.path().join("small.toml"), small_config(&data, "")).unwrap();
    let out = lth(
        tmp.path(),
        &["run", "--config", "small.toml", "--run-dir", "run"],
    );
    common::assert_success(&out, "lth run");

    let out = lth(
        tmp.path(),
        &[
            "export",
            "run",
            "--arm",
            "rewind",
            "--seed",
            "1",
            "--round",
            "2",
            "--out",
            "ticket.safetensors",
        ],
    );
    common::assert_success(&out, "lth export");

    let py = python();
    assert!(
        py.exists(),
        "{} is missing: run `make venv`, or set LTH_PYTHON",
        py.display()
    );
    let out = Command::new(&py)
        .arg("-c")
        .arg(EVALUATE)
        .arg(tmp.path().join("ticket.safetensors"))
        .arg(data.join("t10k-images-idx3-ubyte"))
        .arg(data.join("t10k-labels-idx1-ubyte"))
        .output()
        .unwrap();
    common::assert_success(&out, "python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let torch_acc: f64 = fields[0].parse().unwrap();
    let kept: u64 = fields[1].parse().unwrap();
    assert_eq!(
        fields[2..].join(" "),
        "(300, 784)",
        "PyTorch layout [out, in]"
    );

    let (header, rows) = read_csv(&tmp.path().join("run/rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let row = rows
        .iter()
        .find(|r| r[col("arm")] == "rewind" && r[col("seed")] == "1" && r[col("round")] == "2")
        .expect("row of the exported replica");
    let recorded: f64 = row[col("test_accuracy")].parse().unwrap();
    assert!(
        (torch_acc - recorded).abs() <= 1.0 / 200.0 + 1e-9,
        "PyTorch accuracy {torch_acc} vs recorded {recorded}"
    );
    // Round 2 of layerwise 20%: fc1 keeps 235200 -> 188160 -> 150528 weights.
    assert_eq!(kept, 150_528);
}

#[test]
fn export_names_missing_arms_seeds_and_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 50, true);
    std::fs::write(tmp.path().join("small.toml"), small_config(&data, "")).unwrap();
    let out = lth(
        tmp.path(),
        &[
            "run",
            "--config",
            "small.toml",
            "--run-dir",
            "run",
            "--set",
            "prune.rounds=1",
            "--set",
            "train.iterations=40",
            "--set",
            "data.validation_size=50",
        ],
    );
    common::assert_success(&out, "lth run");
    let cases = [
        (
            vec!["--arm", "finetune", "--seed", "0", "--round", "1"],
            "run has no arm `finetune`",
        ),
        (
            vec!["--arm", "rewind", "--seed", "9", "--round", "1"],
            "run has no seed 9",
        ),
        (
            vec!["--arm", "rewind", "--seed", "0", "--round", "5"],
            "run has no round 5 (rounds 0..=1)",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["export", "run", "--out", "x.safetensors"];
        all.extend(args);
        common::assert_one_line_error(&lth(tmp.path(), &all), needle);
    }
    // A round the run has but has not finished (as if stopped during round 1).
    std::fs::write(
        tmp.path().join("run/progress.toml"),
        "rounds_completed = 1\n",
    )
    .unwrap();
    common::assert_one_line_error(
        &lth(
            tmp.path(),
            &[
                "export",
                "run",
                "--out",
                "x.safetensors",
                "--arm",
                "rewind",
                "--seed",
                "0",
                "--round",
                "1",
            ],
        ),
        "round 1 is not complete",
    );
    let out = lth(
        tmp.path(),
        &[
            "export",
            "nowhere",
            "--arm",
            "rewind",
            "--seed",
            "0",
            "--round",
            "0",
            "--out",
            "x.safetensors",
        ],
    );
    common::assert_one_line_error(&out, "is not an lth run dir");
}
