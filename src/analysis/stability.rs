//! Instability analysis (Frankle et al. 2020): copies of a network trained from the same
//! weights with different data orders, all in one population, and the error barrier on the
//! straight line between each pair of copies ([`super::interpolation`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::Tensor;

use super::batchnorm::StatisticsBatches;
use super::interpolation::{alphas, barrier, distance, evaluate_path};
use super::output::{write_table, Rows, ROW_START};
use super::parts::{Parts, PieceTable};
use super::saved::SavedRound;
use super::stability_report::{
    report_paths, write_report, Copied, ReportPaths, StabilityRows, BARRIER_COLUMNS, PATH_COLUMNS,
};
use super::Study;
use crate::config::{LrPlan, StabilityConfig};
use crate::model::State;
use crate::progress::{Progress, ProgressMode};
use crate::record::RunDir;
use crate::train::{Observer, OptimizerState, Replicas, Span, SpanResult, Trainer};

/// The networks to copy and how: their weights at the rewind point, masks, and each copy's
/// noise seed (its batch order, augmentation and dropout draws).
pub struct Copies<'a> {
    /// Weights (and buffers) of the N networks at iteration `span.start`, `[N, P]`.
    pub start: &'a State,
    /// Their masks `[N, P]`.
    pub masks: &'a Tensor,
    /// `noise[n]`: the noise seeds of network n's copies (the same count for every network).
    pub noise: &'a [Vec<u64>],
    /// The optimizer state of the N networks at the rewind point (fresh when absent).
    pub optimizer: Option<&'a OptimizerState>,
}

/// Trains every copy of every network over `span` as one population (network n's copies at
/// rows `n * copies ..`), each from its network's weights with its own noise seed, at the
/// config's learning rate and schedule.
pub fn train_copies(
    trainer: &Trainer<'_>,
    copies: &Copies<'_>,
    span: &Span,
    observer: &mut dyn Observer,
) -> Result<SpanResult> {
    let per = copies.noise.first().map_or(0, Vec::len) as i64;
    let rows: Vec<i64> = (0..copies.noise.len() as i64)
        .flat_map(|n| std::iter::repeat_n(n, per as usize))
        .collect();
    let index = Tensor::from_slice(&rows).to_device(copies.masks.device());
    let start = State {
        params: copies.start.params.index_select(0, &index),
        buffers: copies
            .start
            .buffers
            .iter()
            .map(|b| b.index_select(0, &index))
            .collect(),
    };
    let masks = copies.masks.index_select(0, &index);
    let seeds: Vec<u64> = copies.noise.iter().flatten().copied().collect();
    let lrs = vec![LrPlan::scheduled(trainer.cfg.lr); seeds.len()];
    let labels: Vec<String> = copies
        .noise
        .iter()
        .enumerate()
        .flat_map(|(n, seeds)| {
            seeds
                .iter()
                .map(move |s| format!("network {n} copy (noise seed {s})"))
        })
        .collect();
    let optimizer = copies.optimizer.map(|o| o.select(&index));
    let replicas = Replicas {
        frozen: None,
        start: &start,
        masks: &masks,
        seeds: &seeds,
        lrs: &lrs,
        labels: &labels,
        optimizer: optimizer.as_ref(),
    };
    trainer.train(&replicas, span, observer, None)
}

/// What `lth stability` measures.
#[derive(Debug, Clone)]
pub struct StabilityRequest {
    /// Rewind iterations k (each below the schedule's end), rounds whose networks are copied
    /// (0, the dense network; a pruned round, its ticket: the round's mask on the dense
    /// weights at k), copies of each (every pair is a path), points on each path, and the
    /// base of the noise seeds: copy c of seed s's network trains with noise seed
    /// `noise_seed + 1000 s + c` (its batch order, augmentation and dropout), apart from the
    /// init seed s.
    pub settings: StabilityConfig,
    /// How progress is shown.
    pub progress: ProgressMode,
}

/// What `lth stability` wrote.
#[derive(Debug, Clone)]
pub struct StabilityOutput {
    /// One row per network x k x pair x point.
    pub paths: PathBuf,
    /// One row per network x k x pair.
    pub barriers: PathBuf,
    /// The summary and the figures.
    pub report: ReportPaths,
    /// Rewind iterations whose rows an earlier, stopped invocation had written.
    pub resumed: Vec<u64>,
}

/// The noise seed of copy `c` of seed `seed`'s network.
fn noise_seed(base: u64, seed: u64, c: usize) -> u64 {
    base.wrapping_add(seed.wrapping_mul(1000))
        .wrapping_add(c as u64)
}

/// The names of a k's tables among the study's pieces.
const TABLES: [&str; 2] = ["paths", "barriers"];

/// Instability analysis of the run at `run_dir` (`study` names the outputs and the device;
/// its round and arm pick the arm of the pruned rounds): each seed's dense network trained
/// again from θ₀ to every k with the run's own data order (the run's own θ_k, bit for bit on
/// the CPU), each requested round's network at k (its mask on θ_k, with the optimizer state
/// at k) copied `copies` times and trained to the schedule's end with the copies' noise seeds,
/// then every pair's path evaluated on the test and training sets. Each k's rows are kept as
/// they are done, so that a stopped study continues from the k it was at.
pub fn stability(run_dir: &Path, study: &Study, req: &StabilityRequest) -> Result<StabilityOutput> {
    let (_, exp) = RunDir::open_existing(run_dir)?;
    let set = &req.settings;
    set.check(exp.train.iterations, exp.total_rounds(), |key| match key {
        "ks" => "--k".into(),
        other => format!("--{}", other.replace('_', "-")),
    })?;
    crate::report::check_report_name(&study.name)?;
    let first = SavedRound::load(run_dir, set.rounds[0], study.arm.as_deref(), study.device)?;
    // Every requested round with its arm and masks, the data loaded once.
    let mut rounds = vec![(first.round, first.arm.clone(), first.masks.shallow_clone())];
    for &round in &set.rounds[1..] {
        let (arm, masks) = first.masks_of(run_dir, round, study.arm.as_deref())?;
        rounds.push((round, arm, masks));
    }
    let exp = &first.exp;
    let end = exp.train.iterations;
    let layout = first.net.layout();
    let dense_accuracy = first
        .metrics_of(run_dir, 0)?
        .iter()
        .map(|m| m[3])
        .collect::<Vec<f64>>();
    let networks: Vec<Copied> = rounds
        .iter()
        .map(|(round, arm, masks)| {
            let counts = crate::prune::remaining_counts(masks, layout);
            let kept: u64 = counts
                .iter()
                .map(|c| layout.prunable().map(|i| c[i]).sum::<u64>())
                .sum();
            Copied {
                round: *round,
                arm: arm.clone(),
                remaining_pct: 100.0 * kept as f64
                    / (counts.len() as f64 * layout.prunable_total() as f64),
            }
        })
        .collect();
    let label = crate::analysis::saved::run_label(run_dir);
    let folder = study.data_root.join(&study.name);
    let parts = Parts::open(&folder, &request_key(run_dir, study, req))?;
    // Each k's rows (paths, barriers), headers dropped.
    let mut done: BTreeMap<u64, (Rows, Rows)> = BTreeMap::new();
    for &k in &set.ks {
        if let Some(mut tables) = parts.load(&format!("k-{k}"), &TABLES)? {
            let barriers = tables.pop().unwrap_or_default().split_off(1);
            let paths = tables.pop().unwrap_or_default().split_off(1);
            done.insert(k, (paths, barriers));
        }
    }
    let resumed: Vec<u64> = done.keys().copied().collect();
    let todo: Vec<u64> = set
        .ks
        .iter()
        .copied()
        .filter(|k| !done.contains_key(k))
        .collect();
    let seeds = exp.seeds.len();
    let copies_total = (rounds.len() * seeds * set.copies) as u64;
    let steps = todo.iter().max().map_or(0, |&k| k * seeds as u64)
        + todo.iter().map(|&k| (end - k) * copies_total).sum::<u64>();
    let mut progress = Progress::new(req.progress, steps);
    if !resumed.is_empty() {
        progress.line(&format!(
            "lth stability: k = {} done by an earlier invocation, kept",
            join(&resumed)
        ));
    }
    if !todo.is_empty() {
        let trainer = Trainer {
            net: first.net.as_ref(),
            data: &first.data,
            cfg: &exp.train,
            augment: exp.data.augment.then_some(exp.data.crop_padding),
            device: study.device,
        };
        let dir = RunDir::at(run_dir);
        let thetas = exp
            .seeds
            .iter()
            .map(|&s| dir.load_theta(s, 0, layout))
            .collect::<Result<Vec<_>>>()?;
        let theta0 = State::stack(&thetas).to_device(study.device);
        let last = todo.iter().copied().max().unwrap_or(0);
        progress.start_stage("dense to k".into(), (0, last), seeds);
        let at_k = dense_at(&trainer, &theta0, &exp.seeds, &todo, &mut progress)?;
        let masks = Tensor::cat(
            &rounds
                .iter()
                .map(|(_, _, m)| m.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let measure = Measure {
            saved: &first,
            trainer: &trainer,
            networks: &networks,
            masks: &masks,
            label: &label,
            req,
        };
        for &k in &todo {
            progress.start_stage(format!("k = {k}"), (k, end), copies_total as usize);
            let (paths, barriers) = measure.at(k, &at_k[&k], &mut progress)?;
            let (path_header, barrier_header) = (header(PATH_COLUMNS), header(BARRIER_COLUMNS));
            let tables = [
                PieceTable {
                    name: TABLES[0],
                    header: &path_header,
                    rows: &paths,
                },
                PieceTable {
                    name: TABLES[1],
                    header: &barrier_header,
                    rows: &barriers,
                },
            ];
            parts.save(&format!("k-{k}"), &tables)?;
            progress.line(&format!("lth stability: k = {k} done"));
            done.insert(k, (paths, barriers));
        }
    }
    progress.finish();
    let (mut paths, mut barriers) = (Vec::new(), Vec::new());
    for k in &set.ks {
        let (p, b) = &done[k];
        paths.extend(p.iter().cloned());
        barriers.extend(b.iter().cloned());
    }
    let out = StabilityOutput {
        paths: folder.join("stability.csv"),
        barriers: folder.join("barriers.csv"),
        report: report_paths(&folder, &study.plots_root.join(&study.name)),
        resumed,
    };
    write_table(&out.paths, &header(PATH_COLUMNS), &paths)?;
    write_table(&out.barriers, &header(BARRIER_COLUMNS), &barriers)?;
    let rows = StabilityRows {
        run: (&label, &exp.name),
        networks: &networks,
        ks: &set.ks,
        paths: &paths,
        barriers: &barriers,
        dense_accuracy: &dense_accuracy,
    };
    write_report(&rows, &out.report)?;
    parts.finish()?;
    Ok(out)
}

/// The study's first columns, then `extra`.
fn header(extra: &[&'static str]) -> Vec<&'static str> {
    ROW_START.iter().chain(extra).copied().collect()
}

/// `a, b, c`.
fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What names a study's results: the run, the request and where it ran (CPU bits depend on
/// the device and the thread count); pieces of another key are not reused.
fn request_key(run_dir: &Path, study: &Study, req: &StabilityRequest) -> String {
    let set = &req.settings;
    let run = run_dir
        .canonicalize()
        .unwrap_or_else(|_| run_dir.to_path_buf());
    format!(
        "lth stability\nrun {}\narm {:?}\nks {:?}\nrounds {:?}\ncopies {}\npoints {}\nnoise seed {}\nbn batches {}\ndevice {:?}\nthreads {}\n",
        run.display(),
        study.arm,
        set.ks,
        set.rounds,
        set.copies,
        set.points,
        set.noise_seed,
        set.bn_batches,
        study.device,
        tch::get_num_threads()
    )
}

/// The copies of every network from one k, trained and their paths measured.
struct Measure<'a> {
    saved: &'a SavedRound,
    trainer: &'a Trainer<'a>,
    networks: &'a [Copied],
    /// Every network's masks, network-major then seed, `[networks x seeds, P]`.
    masks: &'a Tensor,
    label: &'a str,
    req: &'a StabilityRequest,
}

impl Measure<'_> {
    /// `stability.csv`'s and `barriers.csv`'s rows for k, from the dense networks (and
    /// optimizer states) at k.
    fn at(
        &self,
        k: u64,
        (state, optimizer): &(State, Option<OptimizerState>),
        observer: &mut dyn Observer,
    ) -> Result<(Rows, Rows)> {
        let (exp, set) = (&self.saved.exp, &self.req.settings);
        let seeds = exp.seeds.len();
        let networks = self.networks.len() * seeds;
        let device = self.masks.device();
        let index = Tensor::from_slice(
            &(0..networks as i64)
                .map(|n| n % seeds as i64)
                .collect::<Vec<_>>(),
        )
        .to_device(device);
        let start = State {
            params: state.params.index_select(0, &index) * self.masks,
            buffers: state
                .buffers
                .iter()
                .map(|b| b.index_select(0, &index))
                .collect(),
        };
        let optimizer = optimizer.as_ref().map(|o| o.select(&index));
        let noise: Vec<Vec<u64>> = (0..networks)
            .map(|n| {
                let seed = exp.seeds[n % seeds];
                (0..set.copies)
                    .map(|c| noise_seed(set.noise_seed, seed, c))
                    .collect()
            })
            .collect();
        let copies = Copies {
            start: &start,
            masks: self.masks,
            noise: &noise,
            optimizer: optimizer.as_ref(),
        };
        let span = Span::new(k, exp.train.iterations, exp.train.eval_every);
        let trained = train_copies(self.trainer, &copies, &span, observer)?;
        let a = alphas(set.points);
        let net = self.saved.net.as_ref();
        let data = &self.saved.data;
        let statistics = Some(StatisticsBatches {
            split: &data.train,
            batches: set.bn_batches,
            batch_size: exp.train.batch_size,
        });
        let (mut paths, mut barriers) = (Vec::new(), Vec::new());
        for n in 0..networks {
            let copied = &self.networks[n / seeds];
            let seed = exp.seeds[n % seeds];
            // ROW_START's cells; no criterion.
            let lead = vec![
                self.label.to_string(),
                exp.name.clone(),
                copied.round.to_string(),
                copied.arm.clone(),
                seed.to_string(),
                String::new(),
            ];
            let mask = self.masks.get(n as i64);
            let w = |c: usize| trained.state.params.get((n * set.copies + c) as i64);
            for i in 0..set.copies {
                for j in i + 1..set.copies {
                    let (w1, w2) = (w(i), w(j));
                    let path = |split| evaluate_path(net, (&w1, &w2), &mask, &a, split, statistics);
                    let (test, train) = (path(&data.test)?, path(&data.train)?);
                    let pair = format!("{i}-{j}");
                    for (p, alpha) in a.iter().enumerate() {
                        let mut row = lead.clone();
                        row.extend([
                            k.to_string(),
                            pair.clone(),
                            format!("{alpha}"),
                            format!("{}", test[p].0),
                            format!("{}", 1.0 - test[p].1),
                            format!("{}", train[p].0),
                            format!("{}", 1.0 - train[p].1),
                        ]);
                        paths.push(row);
                    }
                    let errors = |path: &[(f64, f64)]| -> Vec<f64> {
                        path.iter().map(|(_, acc)| 1.0 - acc).collect()
                    };
                    let (test_errors, train_errors) = (errors(&test), errors(&train));
                    let mut row = lead.clone();
                    row.extend([
                        k.to_string(),
                        pair,
                        format!("{}", barrier(&a, &test_errors)),
                        format!("{}", barrier(&a, &train_errors)),
                        format!("{}", test_errors[0]),
                        format!("{}", test_errors[test_errors.len() - 1]),
                        format!("{}", distance(&w1, &w2)),
                    ]);
                    barriers.push(row);
                }
            }
        }
        Ok((paths, barriers))
    }
}

/// Each seed's dense network (and optimizer state) at every k of `ks`: θ₀ at 0, else trained
/// from θ₀ with the run's seeds, learning rate and schedule to the largest k, a snapshot at
/// each.
pub fn dense_at(
    trainer: &Trainer<'_>,
    theta0: &State,
    seeds: &[u64],
    ks: &[u64],
    observer: &mut dyn Observer,
) -> Result<BTreeMap<u64, (State, Option<OptimizerState>)>> {
    let mut out = BTreeMap::new();
    if ks.contains(&0) {
        let copy = State {
            params: theta0.params.shallow_clone(),
            buffers: theta0.buffers.iter().map(Tensor::shallow_clone).collect(),
        };
        out.insert(0, (copy, None));
    }
    let last = ks.iter().copied().max().unwrap_or(0);
    if last == 0 {
        return Ok(out);
    }
    let mut span = Span::new(0, last, trainer.cfg.eval_every);
    span.snapshots = ks.iter().copied().filter(|&k| k > 0).collect();
    span.snapshot_optimizer = true;
    let masks = Tensor::ones_like(&theta0.params);
    let lrs = vec![LrPlan::scheduled(trainer.cfg.lr); seeds.len()];
    let labels: Vec<String> = seeds
        .iter()
        .map(|s| format!("seed {s} (dense to k)"))
        .collect();
    let replicas = Replicas {
        frozen: None,
        start: theta0,
        masks: &masks,
        seeds,
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    let result = trainer.train(&replicas, &span, observer, None)?;
    for snap in result.snapshots {
        out.insert(snap.iteration, (snap.state, snap.optimizer));
    }
    Ok(out)
}
