//! A span's checkpoint as one safetensors file of the run dir, written atomically. The numbers
//! that are not tensors travel as small integer and float tensors, so NaN losses of a diverged
//! replica survive exactly; a SHA-256 of the contents (`checksum`) tells a file changed after
//! it was written, which is then not used.

use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::tensors::{save_named, NamedTensors};
use crate::model::State;
use crate::train::checkpoint::{hash_tensor, CheckpointStore, SpanCheckpoint, SpanKey};
use crate::train::{EvalPoint, OptimizerState, Snapshot};

/// The checkpoint file of one training span (see `RunDir::checkpoint_file`).
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint kept at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CheckpointStore for CheckpointFile {
    fn load(
        &self,
        key: &SpanKey,
        optimizer_names: &[&str],
        device: Device,
    ) -> Option<SpanCheckpoint> {
        load(&self.path, key, optimizer_names, device)
    }

    fn save(&self, key: &SpanKey, checkpoint: &SpanCheckpoint) -> Result<()> {
        save(&self.path, key, checkpoint)
    }
}

/// Name of the tensor holding a checkpoint's [`content_digest`].
const CHECKSUM: &str = "checksum";

/// SHA-256 over every tensor of a checkpoint but the checksum, in name order, names
/// included: a file whose contents changed after it was written does not match, and is not
/// used.
fn content_digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a Tensor)>) -> Vec<i64> {
    let mut sorted: Vec<(&str, &Tensor)> = tensors.filter(|(n, _)| *n != CHECKSUM).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, t) in sorted {
        hash.update(name.as_bytes());
        hash_tensor(&mut hash, t);
    }
    hash.finalize().iter().map(|&b| i64::from(b)).collect()
}

/// A list as a tensor led by its length, so that an empty list is never an empty tensor.
fn ints(values: &[i64]) -> Tensor {
    let mut led = vec![values.len() as i64];
    led.extend_from_slice(values);
    Tensor::from_slice(&led)
}

/// Floats led by their count, as `ints`.
fn floats(values: &[f64]) -> Tensor {
    let mut led = vec![values.len() as f64];
    led.extend_from_slice(values);
    Tensor::from_slice(&led)
}

fn origin_ints(key: &SpanKey) -> Vec<i64> {
    key.origin.iter().map(|&b| i64::from(b)).collect()
}

fn some_or_minus_one(v: Option<u64>) -> i64 {
    v.map_or(-1, |x| x as i64)
}

fn from_minus_one(v: i64) -> Option<u64> {
    (v >= 0).then_some(v as u64)
}

fn cpu(t: &Tensor) -> Tensor {
    t.detach().to_device(Device::Cpu).contiguous()
}

fn push_state(out: &mut Vec<(String, Tensor)>, prefix: &str, state: &State) {
    out.push((format!("{prefix}params"), cpu(&state.params)));
    for (i, b) in state.buffers.iter().enumerate() {
        out.push((format!("{prefix}buffer.{i}"), cpu(b)));
    }
}

fn push_optimizer(out: &mut Vec<(String, Tensor)>, prefix: &str, opt: &OptimizerState) {
    for (name, t) in &opt.tensors {
        out.push((format!("{prefix}optimizer.{name}"), cpu(t)));
    }
}

/// Writes `ck` for the span `key` to `path` atomically.
fn save(path: &Path, key: &SpanKey, ck: &SpanCheckpoint) -> Result<()> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let seeds: Vec<i64> = key.seeds.iter().map(|&s| s as i64).collect();
    out.push(("key.seeds".into(), ints(&seeds)));
    out.push((
        "key.span".into(),
        ints(&[key.start as i64, key.end as i64, key.params]),
    ));
    out.push(("key.origin".into(), ints(&origin_ints(key))));
    out.push((
        "loop".into(),
        ints(&[
            ck.iteration as i64,
            ck.since_eval as i64,
            i64::from(ck.optimizer.steps),
            ck.state.buffers.len() as i64,
        ]),
    ));
    push_state(&mut out, "", &ck.state);
    out.push(("masks".into(), cpu(&ck.masks)));
    push_optimizer(&mut out, "", &ck.optimizer);
    if let Some(m) = &ck.dense_momentum {
        out.push(("dense_momentum".into(), cpu(m)));
    }
    out.push(("loss_sum".into(), cpu(&ck.loss_sum)));
    let diverged: Vec<i64> = ck.diverged.iter().map(|&d| some_or_minus_one(d)).collect();
    out.push(("diverged".into(), ints(&diverged)));

    let iterations: Vec<i64> = ck.evals.iter().map(|e| e.iteration as i64).collect();
    out.push(("evals.iterations".into(), ints(&iterations)));
    let replicas = key.seeds.len();
    let mut values = Vec::with_capacity(ck.evals.len() * 5 * replicas);
    let mut has_train = Vec::with_capacity(ck.evals.len());
    for e in &ck.evals {
        has_train.push(i64::from(e.train_loss.is_some()));
        let none = vec![0.0; replicas];
        for row in [
            e.train_loss.as_ref().unwrap_or(&none),
            &e.val_loss,
            &e.val_accuracy,
            &e.test_loss,
            &e.test_accuracy,
        ] {
            values.extend_from_slice(row);
        }
    }
    out.push(("evals.has_train_loss".into(), ints(&has_train)));
    out.push(("evals.values".into(), floats(&values)));

    let snap_iterations: Vec<i64> = ck.snapshots.iter().map(|s| s.iteration as i64).collect();
    let snap_steps: Vec<i64> = ck
        .snapshots
        .iter()
        .map(|s| s.optimizer.as_ref().map_or(-1, |o| i64::from(o.steps)))
        .collect();
    out.push(("snapshots.iterations".into(), ints(&snap_iterations)));
    out.push(("snapshots.optimizer_steps".into(), ints(&snap_steps)));
    for (j, s) in ck.snapshots.iter().enumerate() {
        push_state(&mut out, &format!("snapshot.{j}."), &s.state);
        out.push((format!("snapshot.{j}.masks"), cpu(&s.masks)));
        if let Some(opt) = &s.optimizer {
            push_optimizer(&mut out, &format!("snapshot.{j}."), opt);
        }
    }
    let checksum = content_digest(out.iter().map(|(n, t)| (n.as_str(), t)));
    out.push((CHECKSUM.into(), ints(&checksum)));
    save_named(path, &out)
}

/// The tensors of a checkpoint file, read back into the loop's state.
struct Named(NamedTensors);

impl Named {
    fn get(&self, name: &str) -> Option<Tensor> {
        self.0.get(name).map(Tensor::shallow_clone)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let led = Vec::<i64>::try_from(&self.get(name)?.to_kind(Kind::Int64)).ok()?;
        let (&len, values) = led.split_first()?;
        (usize::try_from(len).ok()? == values.len()).then(|| values.to_vec())
    }

    fn floats(&self, name: &str) -> Option<Vec<f64>> {
        let led = Vec::<f64>::try_from(&self.get(name)?.to_kind(Kind::Double)).ok()?;
        let (&len, values) = led.split_first()?;
        (len as usize == values.len()).then(|| values.to_vec())
    }

    fn state(&self, prefix: &str, buffers: usize, device: Device) -> Option<State> {
        Some(State {
            params: self.get(&format!("{prefix}params"))?.to_device(device),
            buffers: (0..buffers)
                .map(|i| Some(self.get(&format!("{prefix}buffer.{i}"))?.to_device(device)))
                .collect::<Option<_>>()?,
        })
    }

    fn optimizer(
        &self,
        prefix: &str,
        names: &[&str],
        steps: i64,
        device: Device,
    ) -> Option<OptimizerState> {
        Some(OptimizerState {
            tensors: names
                .iter()
                .map(|n| {
                    let t = self.get(&format!("{prefix}optimizer.{n}"))?;
                    Some((n.to_string(), t.to_device(device)))
                })
                .collect::<Option<_>>()?,
            steps: i32::try_from(steps).ok()?,
        })
    }
}

/// Reads the checkpoint at `path` when there is one for the span `key`. A missing file, one
/// that cannot be read, whose contents changed since it was written (checksum) or one of
/// another span gives `None`: the span then starts from its
/// first iteration, which gives the same results, only later.
fn load(
    path: &Path,
    key: &SpanKey,
    optimizer_names: &[&str],
    device: Device,
) -> Option<SpanCheckpoint> {
    if !path.exists() {
        return None;
    }
    let named = Named(NamedTensors::read(path).ok()?);
    let seeds: Vec<i64> = key.seeds.iter().map(|&s| s as i64).collect();
    if named.ints("key.seeds")? != seeds
        || named.ints("key.span")? != [key.start as i64, key.end as i64, key.params]
        || named.ints("key.origin")? != origin_ints(key)
    {
        return None;
    }
    // After the cheap key checks: hashing reads every tensor.
    if named.ints(CHECKSUM)? != content_digest(named.0.iter()) {
        return None;
    }
    let state_loop = named.ints("loop")?;
    let [iteration, since_eval, steps, buffers] = <[i64; 4]>::try_from(state_loop).ok()?;
    let buffers = usize::try_from(buffers).ok()?;
    let replicas = seeds.len();

    let iterations = named.ints("evals.iterations")?;
    let has_train = named.ints("evals.has_train_loss")?;
    let values = named.floats("evals.values")?;
    if has_train.len() != iterations.len() || values.len() != iterations.len() * 5 * replicas {
        return None;
    }
    let evals = iterations
        .iter()
        .zip(&has_train)
        .zip(values.chunks(5 * replicas))
        .map(|((&it, &train), v)| {
            let row = |k: usize| v[k * replicas..(k + 1) * replicas].to_vec();
            EvalPoint {
                iteration: it as u64,
                train_loss: (train == 1).then(|| row(0)),
                val_loss: row(1),
                val_accuracy: row(2),
                test_loss: row(3),
                test_accuracy: row(4),
            }
        })
        .collect();

    let snap_iterations = named.ints("snapshots.iterations")?;
    let snap_steps = named.ints("snapshots.optimizer_steps")?;
    if snap_steps.len() != snap_iterations.len() {
        return None;
    }
    let mut snapshots = Vec::with_capacity(snap_iterations.len());
    for (j, (&it, &st)) in snap_iterations.iter().zip(&snap_steps).enumerate() {
        let prefix = format!("snapshot.{j}.");
        snapshots.push(Snapshot {
            iteration: it as u64,
            state: named.state(&prefix, buffers, device)?,
            masks: named.get(&format!("{prefix}masks"))?.to_device(device),
            optimizer: if st >= 0 {
                Some(named.optimizer(&prefix, optimizer_names, st, device)?)
            } else {
                None
            },
        });
    }
    let state = named.state("", buffers, device)?;
    if state.params.size() != [replicas as i64, key.params] {
        return None;
    }
    Some(SpanCheckpoint {
        iteration: iteration as u64,
        state,
        masks: named.get("masks")?.to_device(device),
        optimizer: named.optimizer("", optimizer_names, steps, device)?,
        dense_momentum: named.get("dense_momentum").map(|m| m.to_device(device)),
        loss_sum: named.get("loss_sum")?.to_device(device),
        since_eval: since_eval as u64,
        diverged: named
            .ints("diverged")?
            .into_iter()
            .map(from_minus_one)
            .collect(),
        evals,
        snapshots,
    })
}
