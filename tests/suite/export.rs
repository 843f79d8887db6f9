//! `lth export` writes one replica's masked weights and masks in PyTorch layout; PyTorch's
//! `safetensors.torch.load_file` and an `nn.Linear` stack with those names evaluate it to the
//! test accuracy recorded in rounds.csv. `--compact` writes the smaller network a structured
//! ticket leaves, whose logits equal the masked network's in lth and in PyTorch.

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

/// What both scripts start with: the imports and `idx(path)`, an IDX file as a uint8 tensor.
const PYTHON_PRELUDE: &str = r#"
import json, struct, sys
import torch
from safetensors.torch import load_file
def idx(p):
    b = open(p, "rb").read()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return torch.frombuffer(bytearray(b[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)
"#;

const EVALUATE: &str = r#"
path, images_path, labels_path = sys.argv[1:4]
t = load_file(path)
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

/// A finished run `run/` of the small config (its `[prune]` table with `prune_extra` added)
/// on 700 training and 200 test examples written to `data/`; the temp dir and that folder.
fn small_run(prune_extra: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 700, 200, false);
    let config =
        small_config(&data, "").replace("rounds = 2", &format!("rounds = 2\n{prune_extra}"));
    std::fs::write(tmp.path().join("small.toml"), config).unwrap();
    let out = lth(
        tmp.path(),
        &[
            "run",
            "--config",
            "small.toml",
            "--run-dir",
            "run",
            "--quiet",
        ],
    );
    common::assert_success(&out, "lth run");
    (tmp, data)
}

#[test]
fn exported_replica_evaluates_in_pytorch_to_the_recorded_accuracy() {
    let (tmp, data) = small_run("");

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
        .arg(format!("{PYTHON_PRELUDE}{EVALUATE}"))
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
            vec![
                "--arm",
                "rewind",
                "--seed",
                "0",
                "--round",
                "1",
                "--compact",
            ],
            "removed no whole neuron or filter (an unstructured ticket)",
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

/// Loads `ticket.safetensors` (masked, full size) and `compact.safetensors` with its JSON into
/// plain PyTorch LeNets of the sizes the JSON gives; prints the largest logit difference on
/// the test images and the kept units of fc1 and fc2.
const COMPARE_COMPACT: &str = r#"
full_path, compact_path, json_path, images_path = sys.argv[1:5]
x = idx(images_path).reshape(-1, 784).float() / 255.0
def lenet(widths, tensors):
    net = torch.nn.Sequential(
        torch.nn.Linear(widths[0], widths[1]), torch.nn.ReLU(),
        torch.nn.Linear(widths[1], widths[2]), torch.nn.ReLU(),
        torch.nn.Linear(widths[2], widths[3]))
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    keys = [k for k in net.state_dict()]
    net.load_state_dict({k: tensors[n] for k, n in zip(keys, names)})
    return net
full = {k: v for k, v in load_file(full_path).items() if not k.endswith("_mask")}
compact = load_file(compact_path)
d = json.load(open(json_path))
kept = [len(l["kept"]) for l in d["layers"]]
for name, shape in d["shapes"].items():
    assert list(compact[name].shape) == shape, name
with torch.no_grad():
    a = lenet([784, 300, 100, 10], full)(x)
    b = lenet([784] + kept + [10], compact)(x)
print(f"{(a - b).abs().max().item():.3e} {kept[0]} {kept[1]} {d['layers'][0]['units']}")
"#;

#[test]
fn a_compact_export_computes_the_masked_networks_logits_in_lth_and_pytorch() {
    use lth::model::{forward_population, Input, Lenet, Network, Pass};
    // Ranked by taylor: its counts are as exact as the norms'.
    let (tmp, data) =
        small_run("granularity = \"neuron\"\nstructured_criterion = \"taylor\"\nscore_batches = 2");
    let export = |extra: &[&str], file: &str| {
        let mut args = vec![
            "export", "run", "--arm", "rewind", "--seed", "1", "--round", "2", "--out", file,
        ];
        args.extend(extra);
        let out = lth(tmp.path(), &args);
        common::assert_success(&out, "lth export");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    export(&[], "ticket.safetensors");
    let said = export(&["--compact"], "compact.safetensors");
    // fc1 300 -> 240 -> 192 neurons, fc2 100 -> 80 -> 64.
    assert!(said.contains("fc1: 192 of 300 units kept"), "{said}");
    assert!(said.contains("fc2: 64 of 100 units kept"), "{said}");

    // In lth: the compact LeNet on the test images gives the masked full network's logits.
    let read = |f: &str| tch::Tensor::read_safetensors(tmp.path().join(f)).unwrap();
    let flat = |net: &Lenet, tensors: &[(String, tch::Tensor)], masked: bool| {
        let parts: Vec<tch::Tensor> = net
            .layout()
            .specs()
            .iter()
            .map(|spec| {
                let get = |n: &str| &tensors.iter().find(|(k, _)| k == n).unwrap().1;
                get(&spec.name).reshape([-1])
                    * if masked && spec.prunable {
                        get(&format!("{}_mask", spec.name)).reshape([-1])
                    } else {
                        tch::Tensor::ones([1], (tch::Kind::Float, tch::Device::Cpu))
                    }
            })
            .collect();
        tch::Tensor::cat(&parts, 0).unsqueeze(0)
    };
    let (full_net, small_net) = (Lenet::new(784, 10), Lenet::with_widths(&[784, 192, 64, 10]));
    let images = {
        let bytes = std::fs::read(data.join("t10k-images-idx3-ubyte")).unwrap();
        tch::Tensor::from_slice(&bytes[16..])
            .view([-1, 1, 28, 28])
            .to_kind(tch::Kind::Float)
            / 255.0
    };
    let logits = |net: &Lenet, params: &tch::Tensor| {
        let pass = Pass {
            params,
            buffers: &[],
            train: false,
            dropout: None,
        };
        tch::no_grad(|| forward_population(net, &pass, Input::Shared(&images)))
    };
    let a = logits(
        &full_net,
        &flat(&full_net, &read("ticket.safetensors"), true),
    );
    let b = logits(
        &small_net,
        &flat(&small_net, &read("compact.safetensors"), false),
    );
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "largest logit difference {diff}");

    // In PyTorch: plainly built smaller model, same logits.
    let py = python();
    let out = Command::new(&py)
        .arg("-c")
        .arg(format!("{PYTHON_PRELUDE}{COMPARE_COMPACT}"))
        .arg(tmp.path().join("ticket.safetensors"))
        .arg(tmp.path().join("compact.safetensors"))
        .arg(tmp.path().join("compact.json"))
        .arg(data.join("t10k-images-idx3-ubyte"))
        .output()
        .unwrap();
    common::assert_success(&out, "python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let diff: f64 = fields[0].parse().unwrap();
    assert!(diff < 1e-4, "PyTorch: largest logit difference {diff}");
    assert_eq!(fields[1..], ["192", "64", "300"]);
}

/// Runs VGG or ResNet (`sys.argv[1]`) functionally on random 32 x 32 images from the masked
/// full export and from the compact one (BatchNorm with running statistics, as in evaluation),
/// checks every compact tensor's shape against the JSON, and prints the largest logit
/// difference and the kept units per layer.
const COMPARE_COMPACT_BN: &str = r#"
import torch.nn.functional as F
arch, full_path, compact_path, json_path = sys.argv[1:5]
def bn(t, h, p):
    return F.batch_norm(h, t[p + ".running_mean"], t[p + ".running_var"], t[p + ".weight"],
                        t[p + ".bias"], False, 0.0, 1e-5)
def vgg(t, x):
    h, i = x, 0
    while f"layers.{i}.conv.weight" in t:
        h = F.relu(bn(t, F.conv2d(h, t[f"layers.{i}.conv.weight"], padding=1), f"layers.{i}.bn"))
        if i in (0, 1, 3, 5, 7):
            h = F.max_pool2d(h, 2)
        i += 1
    return F.linear(h.mean((2, 3)), t["fc.weight"], t["fc.bias"])
def resnet(t, x):
    h, i = F.relu(bn(t, F.conv2d(x, t["conv.weight"], padding=1), "bn")), 0
    while f"blocks.{i}.conv1.weight" in t:
        p = f"blocks.{i}."
        down = p + "shortcut.0.weight" in t
        s = 2 if down else 1
        o = F.relu(bn(t, F.conv2d(h, t[p + "conv1.weight"], stride=s, padding=1), p + "bn1"))
        o = bn(t, F.conv2d(o, t[p + "conv2.weight"], padding=1), p + "bn2")
        short = bn(t, F.conv2d(h, t[p + "shortcut.0.weight"], stride=2), p + "shortcut.1") if down else h
        h, i = F.relu(o + short), i + 1
    return F.linear(h.mean((2, 3)), t["fc.weight"], t["fc.bias"])
net = vgg if arch == "vgg" else resnet
full = {k: v for k, v in load_file(full_path).items() if not k.endswith("_mask")}
compact = load_file(compact_path)
d = json.load(open(json_path))
for name, shape in d["shapes"].items():
    assert list(compact[name].shape) == shape, name
assert set(compact) == set(full), set(full) ^ set(compact)
torch.manual_seed(0)
x = torch.randn(6, 3, 32, 32)
with torch.no_grad():
    a, b = net(full, x), net(compact, x)
print(f"{(a - b).abs().max().item():.3e} {a.abs().max().item():.3e}", *[len(l["kept"]) for l in d["layers"]])
"#;

#[test]
fn a_compact_export_of_batchnorm_networks_computes_the_masked_logits_in_pytorch() {
    for (arch, model, kept) in [
        // 20% of each convolution's filters: VGG-11's 64 ... 512 and ResNet-20's inner ones.
        (
            "vgg",
            "arch = \"vgg-11\"",
            vec![51, 102, 205, 205, 410, 410, 410, 410],
        ),
        (
            "resnet",
            "arch = \"resnet\"\ndepth = 20",
            vec![13, 13, 13, 26, 26, 26, 51, 51, 51],
        ),
    ] {
        let tmp = common::tiny_cifar_run(
            model,
            "granularity = \"filter\"\nstructured_criterion = \"l1\"\n",
        );
        let root = tmp.path();
        for (extra, file) in [
            (None, "ticket.safetensors"),
            (Some("--compact"), "compact.safetensors"),
        ] {
            let mut args = vec![
                "export", "run", "--arm", "rewind", "--seed", "0", "--round", "1", "--out", file,
            ];
            args.extend(extra);
            let out = lth(root, &args);
            common::assert_success(&out, "lth export");
        }
        let out = Command::new(python())
            .arg("-c")
            .arg(format!("{PYTHON_PRELUDE}{COMPARE_COMPACT_BN}"))
            .arg(arch)
            .arg(root.join("ticket.safetensors"))
            .arg(root.join("compact.safetensors"))
            .arg(root.join("compact.json"))
            .output()
            .unwrap();
        common::assert_success(&out, "python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = stdout.split_whitespace().collect();
        let (diff, scale): (f64, f64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        assert!(scale > 0.0, "{arch}: logits not all zero");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{arch}: largest logit difference {diff}"
        );
        let got: Vec<usize> = fields[2..].iter().map(|f| f.parse().unwrap()).collect();
        assert_eq!(got, kept, "{arch}: units kept per layer");
    }
}
