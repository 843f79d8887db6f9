//! Reports: tidy data for notebooks and publication figures from one or many run dirs
//! (`lth report`), and the figure every run draws of itself.

pub mod axis;
pub mod chart;
pub mod figures;
pub mod heatmap;
pub mod load;
pub mod stats;
pub mod style;
pub mod tidy;

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use figures::ArmStyles;
pub use load::RunData;

use crate::config::PruneSchedule;
use crate::experiment::RunFigure;
use crate::record::run_dir::RUN_FIGURE;
use crate::record::{RunDir, Table};

/// Where a report goes and what it draws.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Report name: `notebooks-data/<name>/` and `plots/<name>/`.
    pub name: String,
    /// Rounds drawn in the curves figure (default: first, middle, last).
    pub rounds: Option<Vec<u32>>,
    /// Root of the tidy data (`notebooks-data`).
    pub data_root: PathBuf,
    /// Root of the figures (`plots`).
    pub plots_root: PathBuf,
}

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct ReportOutput {
    /// Tidy CSV files.
    pub data_files: Vec<PathBuf>,
    /// Figures (each as `.svg` and `.png`; the base paths).
    pub figures: Vec<PathBuf>,
    /// Runs still missing rounds: (label, rounds complete, rounds expected).
    pub partial: Vec<(String, u32, u32)>,
}

/// The figure a run draws of itself after each round: figure 1 into
/// `<run>/accuracy_vs_weights` and, when `plots_dir` is given, into
/// `<plots_dir>/<run dir's name>/accuracy_vs_weights` (`lth run` passes it to the run).
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// Folder that also receives the figure, under the run dir's name.
    pub plots_dir: Option<PathBuf>,
}

impl RunFigure for RunFigures {
    fn prepare(&self, dir: &RunDir) -> Result<()> {
        let Some(plots) = &self.plots_dir else {
            return Ok(());
        };
        let folder = run_plots_dir(dir.root(), plots);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))
    }

    fn draw(&self, dir: &RunDir, rounds: &Table, schedule: PruneSchedule) -> Result<()> {
        let mut styles = ArmStyles::default();
        let arm_c = rounds.column("arm").expect("arm column");
        styles.add(rounds.rows().iter().map(|r| &r[arm_c]));
        let figure = figures::accuracy(rounds, &styles, figures::round0_label(schedule));
        figure.render(&dir.figure_base())?;
        if let Some(plots) = &self.plots_dir {
            figure.render(&run_plots_dir(dir.root(), plots).join(RUN_FIGURE))?;
        }
        Ok(())
    }
}

/// Folder under `plots_dir` that receives the figure of the run in `run_dir`:
/// `<plots_dir>/<run dir's name>`.
fn run_plots_dir(run_dir: &Path, plots_dir: &Path) -> PathBuf {
    let run_name = run_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    plots_dir.join(run_name)
}

/// Labels telling runs apart by the config keys whose values differ between them.
pub fn difference_labels(runs: &[RunData]) -> Vec<String> {
    let configs: Vec<_> = runs.iter().map(tidy::config_columns).collect();
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let differing: Vec<&String> = keys
        .into_iter()
        .filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k)))
        .collect();
    runs.iter()
        .zip(&configs)
        .map(|(run, config)| {
            let mut parts: Vec<String> = differing
                .iter()
                .take(3)
                .map(|k| format!("{k}={}", config.get(*k).map_or("-", String::as_str)))
                .collect();
            if differing.len() > 3 {
                parts.push("...".into());
            }
            if parts.is_empty() {
                run.label.clone()
            } else {
                parts.join(", ")
            }
        })
        .collect()
}

/// Each run's folder name labels its rows in the tidy data and names its figure folder, so two
/// run dirs may not share one.
fn check_distinct_labels(runs: &[RunData]) -> Result<()> {
    for (i, run) in runs.iter().enumerate() {
        if let Some(other) = runs[..i].iter().find(|o| o.label == run.label) {
            let same = |r: &RunData| r.dir.canonicalize().unwrap_or_else(|_| r.dir.clone());
            if same(other) == same(run) {
                bail!("run dir {} is given twice", run.dir.display());
            }
            bail!(
                "run dirs {} and {} have the same name `{}`, which labels a run in the tidy data and names its figure folder; give one another name",
                other.dir.display(),
                run.dir.display(),
                run.label
            );
        }
    }
    Ok(())
}

/// Every round asked for with `--rounds` is one of some run's rounds (a round still to come
/// in a partial run counts).
fn check_rounds_exist(runs: &[RunData], rounds: &[u32]) -> Result<()> {
    let last = runs
        .iter()
        .map(|r| r.rounds_expected.saturating_sub(1))
        .max()
        .unwrap_or(0);
    if let Some(missing) = rounds.iter().find(|&&r| r > last) {
        bail!("`--rounds` asks for round {missing}, but the runs' rounds are 0 to {last}");
    }
    Ok(())
}

/// A report name is one folder name, so that its data and figures stay inside
/// `--data-dir` and `--plots-dir`.
pub fn check_report_name(name: &str) -> Result<()> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => bail!(
            "report name {name:?} must be one folder name (no `/`, not `.` or `..`): it names notebooks-data/<name> and plots/<name>"
        ),
    }
}

/// Writes the tidy data and figures of `dirs`.
pub fn report(dirs: &[PathBuf], opts: &ReportOptions) -> Result<ReportOutput> {
    if dirs.is_empty() {
        bail!("give at least one run dir");
    }
    check_report_name(&opts.name)?;
    let runs = dirs
        .iter()
        .map(|d| RunData::load(d))
        .collect::<Result<Vec<_>>>()?;
    report_runs(&runs, opts)
}

/// Whether every row of `rounds` has `flops_remaining_pct` (runs of networks that count
/// their multiply-adds, made by an lth that writes them).
fn has_flops(rounds: &Table) -> bool {
    rounds.column("flops_remaining_pct").is_some_and(|c| {
        !rounds.rows().is_empty() && rounds.rows().iter().all(|r| r[c].parse::<f64>().is_ok())
    })
}

/// Writes the tidy data and figures of `runs` (run dirs loaded, or a sweep's grid points).
pub fn report_runs(runs: &[RunData], opts: &ReportOptions) -> Result<ReportOutput> {
    if runs.is_empty() {
        bail!("nothing to report: no run");
    }
    check_report_name(&opts.name)?;
    check_distinct_labels(runs)?;
    if let Some(rounds) = &opts.rounds {
        check_rounds_exist(runs, rounds)?;
    }
    let data_dir = opts.data_root.join(&opts.name);
    let plots_dir = opts.plots_root.join(&opts.name);
    let data_files = tidy::write_tidy(runs, &data_dir)?;

    let mut styles = ArmStyles::default();
    for run in runs {
        styles.add(run.arms().iter());
    }
    let mut figures = Vec::new();
    for run in runs {
        let dir = if runs.len() == 1 {
            plots_dir.clone()
        } else {
            plots_dir.join(&run.label)
        };
        let chosen = opts
            .rounds
            .clone()
            .unwrap_or_else(|| figures::default_rounds(&run.rounds));
        let round0 = figures::round0_label(run.config.prune.schedule);
        let drawn = [
            ("accuracy", figures::accuracy(&run.rounds, &styles, round0)),
            (
                "early_stop_iteration",
                figures::early_stop_iteration(&run.rounds, &styles, round0),
            ),
            (
                "curves",
                figures::curves(&run.curves, &run.rounds, &chosen, &styles),
            ),
            ("layers", figures::layers(&run.layers)),
        ];
        for (name, figure) in drawn {
            let base = dir.join(name);
            figure.render(&base)?;
            figures.push(base);
        }
        if let Some(figure) = figures::accuracy_vs_train_flops(&run.rounds, &styles) {
            let base = dir.join("accuracy_vs_train_flops");
            figure.render(&base)?;
            figures.push(base);
        }
    }
    if runs.len() > 1 {
        let labels = difference_labels(runs);
        let tables: Vec<(&Table, String)> = runs.iter().map(|r| &r.rounds).zip(labels).collect();
        let base = plots_dir.join("accuracy_across_runs");
        figures::across_runs(&tables, &styles, figures::WEIGHTS).render(&base)?;
        figures.push(base);
        // Where every row counts its multiply-adds, the same against FLOPs remaining
        // (structured and unstructured pruning side by side).
        if runs.iter().all(|r| has_flops(&r.rounds)) {
            let base = plots_dir.join("accuracy_vs_flops_across_runs");
            figures::across_runs(&tables, &styles, figures::FLOPS).render(&base)?;
            figures.push(base);
        }
    }
    let partial = runs
        .iter()
        .filter(|r| r.is_partial())
        .map(|r| (r.label.clone(), r.rounds_completed, r.rounds_expected))
        .collect();
    Ok(ReportOutput {
        data_files,
        figures,
        partial,
    })
}
