//! `lth masks compare`: how much the masks of finished runs agree. For every pair of masks at
//! the same pruned round (seeds within an arm, arms within a seed, and across runs), per
//! pruned tensor and overall: the kept counts, their intersection and union, the Jaccard index
//! |A ∩ B| / |A ∪ B|, and what two random masks of those counts would give,
//! k_a k_b / n / (k_a + k_b - k_a k_b / n). For every mask, the fraction of its kept weights
//! that the same arm and seed still keep one round later. Tidy CSVs under
//! `notebooks-data/<name>/`, and a figure of the Jaccard index against weights remaining, one
//! line per kind of pair with its random expectation dashed, under `plots/<name>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::output::{mean_line, write_table, Rows};
use crate::record::RunDir;
use crate::report::axis::PercentAxis;
use crate::report::chart::{entry, Chart, Dash, Figure, XAxis};
use crate::report::heatmap::Heatmap;
use crate::report::stats::Stats;
use crate::report::style::arm_color;

/// Where the comparison's outputs go.
#[derive(Debug, Clone)]
pub struct OverlapRequest {
    /// Output name: `notebooks-data/<name>/`, `plots/<name>/`.
    pub name: String,
    /// Root of the tidy data.
    pub data_root: PathBuf,
    /// Root of the figures.
    pub plots_root: PathBuf,
}

/// What `lth masks compare` wrote.
#[derive(Debug, Clone)]
pub struct OverlapOutput {
    /// The pairs' CSV.
    pub pairs_csv: PathBuf,
    /// The survival CSV.
    pub survival_csv: PathBuf,
    /// The figure's base path (`.svg`, `.png`).
    pub figure: PathBuf,
    /// Per round, the heatmap of pairs x layers (base paths).
    pub heatmaps: Vec<PathBuf>,
    /// Pairs compared (over all rounds).
    pub pairs: usize,
}

/// Columns of `mask_overlap.csv`.
const PAIR_COLUMNS: &[&str] = &[
    "round",
    "pair",
    "a",
    "b",
    "layer",
    "size",
    "kept_a",
    "kept_b",
    "intersection",
    "union",
    "jaccard",
    "random_jaccard",
];

/// Columns of `mask_survival.csv`.
const SURVIVAL_COLUMNS: &[&str] = &[
    "mask",
    "round",
    "layer",
    "kept",
    "kept_next",
    "survived",
    "fraction",
];

/// One mask: which run, arm and seed, and its pruned tensors (name, 0/1 bools, flat), by
/// name.
struct Mask {
    run: String,
    arm: String,
    seed: u64,
    layers: Vec<(String, Tensor)>,
}

impl Mask {
    fn label(&self) -> String {
        format!("{}:{}:{}", self.run, self.arm, self.seed)
    }
}

/// Per kind of pair and round: the pairs' percents of weights remaining, Jaccard indices and
/// random expectations.
type Points = BTreeMap<(String, u32), (Vec<f64>, Vec<f64>, Vec<f64>)>;

/// Per round and heatmap row (a kind of pair and the arms it pairs): the Jaccard indices of
/// its pairs, per column (the pruned tensors by name, then `all`).
type Grid = BTreeMap<u32, BTreeMap<String, Vec<Vec<f64>>>>;

/// A heatmap row's label: the kind of pair and what it pairs (the arms; with the run where the
/// masks come from several runs). `None` for pairs of another arm and another seed.
fn row_label(kind: &str, a: &Mask, b: &Mask, several_runs: bool) -> Option<String> {
    let side = |m: &Mask| match several_runs {
        true => format!("{}:{}", m.run, m.arm),
        false => m.arm.clone(),
    };
    match kind {
        "seeds" => Some(format!("seeds · {}", side(a))),
        "arms" | "runs" => Some(format!("{kind} · {} / {}", side(a), side(b))),
        _ => None,
    }
}

/// The Jaccard index two random masks of `ka` and `kb` kept entries out of `n` have in
/// expectation (of the intersection and the union).
pub fn random_jaccard(ka: f64, kb: f64, n: f64) -> f64 {
    let inter = ka * kb / n;
    let union = ka + kb - inter;
    if union > 0.0 {
        inter / union
    } else {
        1.0
    }
}

/// Compares the masks of every complete round of the runs at `run_dirs`.
pub fn compare_masks(run_dirs: &[PathBuf], req: &OverlapRequest) -> Result<OverlapOutput> {
    crate::report::check_report_name(&req.name)?;
    // rounds[r] = every mask of round r.
    let mut rounds: BTreeMap<u32, Vec<Mask>> = BTreeMap::new();
    let mut shapes: Option<Vec<(String, Vec<i64>)>> = None;
    for path in run_dirs {
        let (dir, exp) = RunDir::open_existing(path)?;
        let run = run_label(path);
        let completed = dir.rounds_completed(exp.total_rounds())?;
        for round in 1..completed {
            for arm in &exp.arms {
                for &seed in &exp.seeds {
                    dir.verify_replica_round(&arm.name, seed, round)?;
                    let (_, masks) = dir.round_tensors(&arm.name, seed, round)?;
                    let mut layers: Vec<(String, Tensor)> = masks
                        .iter()
                        .filter(|(_, t)| t.dim() >= 2)
                        .map(|(n, t)| (n.to_string(), t.reshape([-1]).gt(0.5)))
                        .collect();
                    layers.sort_by(|a, b| a.0.cmp(&b.0));
                    let these: Vec<(String, Vec<i64>)> =
                        layers.iter().map(|(n, t)| (n.clone(), t.size())).collect();
                    match &shapes {
                        None => shapes = Some(these),
                        Some(s) if *s != these => bail!(
                            "{} holds masks of another network than {}: compare runs of one model",
                            path.display(),
                            run_dirs[0].display()
                        ),
                        Some(_) => {}
                    }
                    rounds.entry(round).or_default().push(Mask {
                        run: run.clone(),
                        arm: arm.name.clone(),
                        seed,
                        layers,
                    });
                }
            }
        }
    }
    if rounds.is_empty() {
        bail!("no complete pruned round to compare in the run dirs given");
    }
    let mut pair_rows: Rows = Vec::new();
    // (kind, round) -> (percent remaining, jaccards, random jaccards)
    let mut points: Points = BTreeMap::new();
    let mut pairs = 0;
    let several_runs = run_dirs.len() > 1;
    let mut grid: Grid = BTreeMap::new();
    let mut random: Grid = BTreeMap::new();
    for (&round, masks) in &rounds {
        for i in 0..masks.len() {
            for j in i + 1..masks.len() {
                let (a, b) = (&masks[i], &masks[j]);
                let kind = pair_kind(a, b);
                pairs += 1;
                let mut totals = [0f64; 5];
                let mut cells = Vec::new();
                for ((name, ma), (_, mb)) in a.layers.iter().zip(&b.layers) {
                    let counts = overlap_counts(ma, mb);
                    for (t, c) in totals.iter_mut().zip(counts) {
                        *t += c;
                    }
                    cells.push(counts);
                    pair_rows.push(pair_row(round, (&kind, a, b), name, counts));
                }
                pair_rows.push(pair_row(round, (&kind, a, b), "all", totals));
                cells.push(totals);
                if let Some(label) = row_label(&kind, a, b, several_runs) {
                    let jaccards = cells.iter().map(|c| jaccard(c[3], c[4]));
                    let randoms = cells.iter().map(|c| random_jaccard(c[1], c[2], c[0]));
                    for (target, values) in [
                        (&mut grid, jaccards.collect::<Vec<_>>()),
                        (&mut random, randoms.collect()),
                    ] {
                        let row = target
                            .entry(round)
                            .or_default()
                            .entry(label.clone())
                            .or_default();
                        row.resize(values.len(), Vec::new());
                        for (cell, v) in row.iter_mut().zip(values) {
                            cell.push(v);
                        }
                    }
                }
                let [n, ka, kb, inter, union] = totals;
                let entry = points.entry((kind.clone(), round)).or_default();
                entry.0.push(100.0 * (ka + kb) / 2.0 / n);
                entry.1.push(jaccard(inter, union));
                entry.2.push(random_jaccard(ka, kb, n));
            }
        }
    }
    let survival_rows = survival(&rounds);
    let dir = req.data_root.join(&req.name);
    let pairs_csv = dir.join("mask_overlap.csv");
    let survival_csv = dir.join("mask_survival.csv");
    write_table(&pairs_csv, PAIR_COLUMNS, &pair_rows)?;
    write_table(&survival_csv, SURVIVAL_COLUMNS, &survival_rows)?;
    let figure = req.plots_root.join(&req.name).join("mask_overlap");
    overlap_figure(&points).render(&figure)?;
    let columns: Vec<String> = rounds
        .values()
        .next()
        .and_then(|m| m.first())
        .map(|m| {
            m.layers
                .iter()
                .map(|(n, _)| n.clone())
                .chain(["all".to_string()])
                .collect()
        })
        .unwrap_or_default();
    let mut heatmaps = Vec::new();
    for (round, rows) in &grid {
        let base = req
            .plots_root
            .join(&req.name)
            .join(format!("mask_overlap_round_{round:02}"));
        heatmap(*round, rows, &random[round], &columns).render(&base)?;
        heatmaps.push(base);
    }
    Ok(OverlapOutput {
        pairs_csv,
        survival_csv,
        figure,
        heatmaps,
        pairs,
    })
}

/// The Jaccard index of `inter` over `union` (1 for two empty masks).
fn jaccard(inter: f64, union: f64) -> f64 {
    if union > 0.0 {
        inter / union
    } else {
        1.0
    }
}

/// Round `round`'s heatmap: a row per kind of pair and arms (the mean over its pairs), then the
/// random masks' expectation (the mean over every pair drawn).
fn heatmap(
    round: u32,
    rows: &BTreeMap<String, Vec<Vec<f64>>>,
    random: &BTreeMap<String, Vec<Vec<f64>>>,
    columns: &[String],
) -> Heatmap {
    let mean = |v: &[f64]| Stats::of(v).map_or(f64::NAN, |s| s.mean);
    let mut labels: Vec<String> = rows.keys().cloned().collect();
    let mut values: Vec<Vec<f64>> = rows
        .values()
        .map(|r| r.iter().map(|c| mean(c)).collect())
        .collect();
    let all_random: Vec<f64> = (0..columns.len())
        .map(|c| {
            let drawn: Vec<f64> = random.values().flat_map(|r| r[c].iter().copied()).collect();
            mean(&drawn)
        })
        .collect();
    labels.push("random masks (expected)".into());
    values.push(all_random);
    Heatmap {
        title: format!("mask overlap (Jaccard index), round {round}"),
        rows: labels,
        columns: columns.to_vec(),
        values,
    }
}

/// `seeds` (same run and arm), `arms` (same run and seed), `runs` (different runs) or
/// `other` (same run, other arm and seed).
fn pair_kind(a: &Mask, b: &Mask) -> String {
    match (a.run == b.run, a.arm == b.arm, a.seed == b.seed) {
        (true, true, _) => "seeds",
        (true, false, true) => "arms",
        (true, false, false) => "other",
        (false, _, _) => "runs",
    }
    .to_string()
}

/// `[size, kept_a, kept_b, intersection, union]` of two boolean masks of one tensor.
pub fn overlap_counts(a: &Tensor, b: &Tensor) -> [f64; 5] {
    let count = |t: &Tensor| t.sum(Kind::Int64).int64_value(&[]) as f64;
    [
        a.numel() as f64,
        count(a),
        count(b),
        count(&a.logical_and(b)),
        count(&a.logical_or(b)),
    ]
}

/// One row of `mask_overlap.csv`.
fn pair_row(
    round: u32,
    (kind, a, b): (&str, &Mask, &Mask),
    layer: &str,
    [n, ka, kb, inter, union]: [f64; 5],
) -> Vec<String> {
    let jaccard = jaccard(inter, union);
    vec![
        round.to_string(),
        kind.to_string(),
        a.label(),
        b.label(),
        layer.to_string(),
        n.to_string(),
        ka.to_string(),
        kb.to_string(),
        inter.to_string(),
        union.to_string(),
        jaccard.to_string(),
        random_jaccard(ka, kb, n).to_string(),
    ]
}

/// Rows of `mask_survival.csv`: each mask of round r against the same run, arm and seed's
/// mask of round r + 1, per tensor and overall.
fn survival(rounds: &BTreeMap<u32, Vec<Mask>>) -> Rows {
    let mut rows = Vec::new();
    for (&round, masks) in rounds {
        let Some(next) = rounds.get(&(round + 1)) else {
            continue;
        };
        for m in masks {
            let Some(n) = next
                .iter()
                .find(|x| x.run == m.run && x.arm == m.arm && x.seed == m.seed)
            else {
                continue;
            };
            let mut total = [0f64; 3];
            let mut push = |layer: &str, [kept, kept_next, survived]: [f64; 3]| {
                let fraction = if kept > 0.0 { survived / kept } else { 0.0 };
                rows.push(vec![
                    m.label(),
                    round.to_string(),
                    layer.to_string(),
                    kept.to_string(),
                    kept_next.to_string(),
                    survived.to_string(),
                    fraction.to_string(),
                ]);
            };
            for ((name, a), (_, b)) in m.layers.iter().zip(&n.layers) {
                let c = overlap_counts(a, b);
                let counts = [c[1], c[2], c[3]];
                for (t, v) in total.iter_mut().zip(counts) {
                    *t += v;
                }
                push(name, counts);
            }
            push("all", total);
        }
    }
    rows
}

/// The Jaccard index against weights remaining: per kind of pair, the mean over its pairs
/// with a ±1 standard deviation band, and its random expectation dashed.
fn overlap_figure(points: &Points) -> Figure {
    let mut kinds: Vec<&String> = points.keys().map(|(k, _)| k).collect();
    kinds.dedup();
    let mut series = Vec::new();
    let mut xs = Vec::new();
    for (index, kind) in kinds.iter().enumerate() {
        let rows: Vec<_> = points.iter().filter(|((k, _), _)| k == *kind).collect();
        let at = |v: &(Vec<f64>, Vec<f64>, Vec<f64>)| Stats::of(&v.0).map_or(0.0, |s| s.mean);
        xs.extend(rows.iter().map(|(_, v)| at(v)));
        series.push(mean_line(
            format!("{kind} (observed)"),
            index,
            rows.iter().map(|(_, v)| (at(v), v.1.clone())).collect(),
        ));
        let mut random = mean_line(
            format!("{kind} (random masks)"),
            index,
            rows.iter().map(|(_, v)| (at(v), v.2.clone())).collect(),
        );
        random.dash = Dash::Dashed;
        random.band.clear();
        random.marker = None;
        random.color = arm_color(index);
        series.push(random);
    }
    let legend = series.iter().map(entry).collect();
    Figure {
        panels: vec![Chart {
            title: "mask overlap".into(),
            x_desc: "weights remaining (%)".into(),
            y_desc: "Jaccard index".into(),
            x: XAxis::Percent(PercentAxis::covering(xs.into_iter())),
            y_decimals: 2,
            series,
            references: Vec::new(),
        }],
        columns: 1,
        panel_size: (480, 320),
        legend,
        legend_columns: 2,
    }
}

/// A run's label: its folder's name.
fn run_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
