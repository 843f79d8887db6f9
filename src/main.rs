//! The `lth` command line: parse, call the library, print errors as one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use lth::analysis::saved::run_label;
use lth::analysis::stability::{stability, StabilityRequest};
use lth::analysis::{prune_curve, sensitivity, PruneCurveRequest, SensitivityRequest, Study};
use lth::config::{
    config_hash, preset_names, preset_summary, ConfigSource, Experiment, PruneCriterion,
};
use lth::experiment::{check, default_run_dir, run, run_device, DeviceChoice, RunOptions};
use lth::export::compact::export_compact;
use lth::export::{export, ExportRequest};
use lth::interrupt::{self, Interrupted};
use lth::progress::{say, warn, ProgressMode};
use lth::report::{report, ReportOptions, RunFigures};
use lth::sweep::{
    self as sweep, run_in_parallel, run_tasks, slurm, task_state, Sweep, Task, TaskOutcome,
    TaskState,
};

/// Lottery-ticket experiments on libtorch: seeded iterative magnitude pruning with rewinding.
#[derive(Parser)]
#[command(name = "lth", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run (or resume) an experiment.
    Run(RunArgs),
    /// Print the resolved config and its run dir, then check it against its data set and model
    /// as `run` would (an error and a non-zero exit if it fails), without running anything.
    Config(ConfigArgs),
    /// Write one replica's weights and masks of one round as PyTorch-layout safetensors.
    Export(ExportArgs),
    /// Turn run dirs into tidy data (notebooks-data/NAME) and figures (plots/NAME).
    Report(ReportArgs),
    /// Prune one round's trained networks one-shot by each criterion to each sparsity and
    /// evaluate them with no retraining: tidy CSV (notebooks-data/NAME) and figure (plots/NAME).
    PruneCurve(PruneCurveArgs),
    /// Prune one prunable tensor at a time of one round's trained networks to each sparsity
    /// and evaluate them with no retraining (per-layer sensitivity); `--suggest` prints
    /// layerwise rates from it.
    Sensitivity(SensitivityArgs),
    /// Instability analysis (linear mode connectivity): copies of each network at rewind
    /// iteration k trained with other data orders, the error along the line between them.
    Stability(StabilityArgs),
    /// Apply every complete round's masks to the untrained network (θ₀, and with `--constant`
    /// to α · sign(θ₀)) and evaluate them with no training (supermasks): tidy CSV
    /// (notebooks-data/NAME) and figure (plots/NAME). `--round` is not used: every round is.
    Supermask(SupermaskArgs),
    /// Compare the masks of finished runs: overlap of every pair at the same round and what
    /// survives from one round to the next (notebooks-data/NAME, plots/NAME).
    #[command(subcommand)]
    Masks(MasksCommand),
    /// List the bundled presets.
    Presets,
    /// A grid of experiments from a sweep file: plan it, run it, or run one of its tasks.
    #[command(subcommand)]
    Sweep(SweepCommand),
}

#[derive(Args)]
struct SupermaskArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Also apply the masks to the signed constant network α · sign(θ₀), α each tensor's
    /// standard deviation at θ₀.
    #[arg(long)]
    constant: bool,
    /// Also evaluate the masks these criteria cut one-shot from θ₀ (w_i) and the trained
    /// dense network (w_f) at each round's per-tensor counts, e.g.
    /// `large-final-same-sign,large-init,movement`.
    #[arg(long, value_delimiter = ',', value_enum)]
    criteria: Vec<PruneCriterion>,
    /// Rounds evaluated, e.g. `0,3,6` (default: every complete round).
    #[arg(long, value_delimiter = ',')]
    rounds: Option<Vec<u32>>,
}

#[derive(Subcommand)]
enum MasksCommand {
    /// Jaccard index of every pair of masks at the same round (seeds, arms, runs), per
    /// tensor and overall, against random masks of the same counts, and each mask's
    /// survivors one round later.
    Compare(MasksCompareArgs),
}

/// Where a command's outputs go: the roots of the tidy data and of the figures.
#[derive(Args)]
struct OutputRoots {
    /// Root folder of the tidy data.
    #[arg(long, default_value = "notebooks-data")]
    data_dir: PathBuf,
    /// Root folder of the figures.
    #[arg(long, default_value = "plots")]
    plots_dir: PathBuf,
}

#[derive(Args)]
struct MasksCompareArgs {
    /// Run dirs whose complete rounds are compared (one model).
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Output name (default: the first run dir's name, or `masks` for several).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    roots: OutputRoots,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Print one line per task (index, grid point, seeds, replica-steps, run dir) and the
    /// totals, after checking every config the sweep makes against its data set and model;
    /// runs nothing.
    Plan(SweepFileArgs),
    /// Run every task not complete yet, one after another on this machine (a failing task is
    /// reported and the others go on); tasks already complete are skipped.
    Run(SweepRunArgs),
    /// Run (or resume) the one task at `--index`.
    Task(SweepTaskArgs),
    /// One line per task: done, running, stopped (rounds complete), failed (its log's error
    /// line) or not started; then the counts.
    Status(SweepFileArgs),
}

#[derive(Args)]
struct SweepFileArgs {
    /// The sweep file (TOML).
    file: PathBuf,
    /// Root of the sweep's folder: task run dirs go to `<runs-dir>/<sweep name>/`.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
}

#[derive(Args)]
struct SweepRunArgs {
    #[command(flatten)]
    sweep: SweepFileArgs,
    /// Where the tasks run: `local`, this machine; `slurm`, a job array submitted with
    /// `sbatch` (only the tasks neither complete nor in Slurm's queue).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// Tasks at once, each a child process (`lth sweep task`) writing to its log file
    /// `<sweep dir>/logs/task-<index>.log`, the CPU cores split between them unless
    /// `--threads` is given.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    #[command(flatten)]
    slurm: SlurmFlags,
    #[command(flatten)]
    flags: RunFlags,
}

/// What Slurm tasks ask for, over the sweep file's `[slurm]` table (`--executor slurm` only).
#[derive(Args, Clone, Default)]
struct SlurmFlags {
    /// Slurm partition (over `slurm.partition`).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm time limit per task, minutes or [D-]H:MM:SS (over `slurm.time`).
    #[arg(long)]
    time: Option<String>,
    /// CPUs per Slurm task, also its `--threads` (over `slurm.cpus_per_task`).
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Memory per Slurm task, e.g. `8G` (over `slurm.mem`).
    #[arg(long)]
    mem: Option<String>,
    /// GPUs per Slurm task (`--gres=gpu:G`; over `slurm.gpus`).
    #[arg(long)]
    gpus: Option<u32>,
    /// Slurm array tasks running at once (over `slurm.max_running`).
    #[arg(long)]
    max_running: Option<u32>,
    /// More `#SBATCH` options, after the file's `slurm.extra` (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION")]
    extra: Vec<String>,
}

impl SlurmFlags {
    /// Whether any is given.
    fn any(&self) -> bool {
        self.partition.is_some()
            || self.time.is_some()
            || self.cpus_per_task.is_some()
            || self.mem.is_some()
            || self.gpus.is_some()
            || self.max_running.is_some()
            || !self.extra.is_empty()
    }

    /// As the sweep file's settings type.
    fn settings(&self) -> lth::sweep::SlurmSettings {
        lth::sweep::SlurmSettings {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            gpus: self.gpus,
            max_running: self.max_running,
            job_name: None,
            extra: self.extra.clone(),
        }
    }
}

#[derive(Args)]
struct SweepTaskArgs {
    #[command(flatten)]
    sweep: SweepFileArgs,
    /// The task's index (as `lth sweep plan` numbers them, from 0).
    #[arg(long)]
    index: usize,
    #[command(flatten)]
    flags: RunFlags,
}

/// Where a sweep's tasks run.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Executor {
    /// This machine, one task after another (or `--jobs N` at once).
    Local,
    /// A Slurm job array (`sbatch`), its settings from the sweep file's `[slurm]` table.
    Slurm,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").args(["preset", "config"]).required(true)))]
struct SourceArgs {
    /// A bundled preset (see `lth presets`).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// A TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a key with a TOML value, e.g. `seeds=[0,1,2]` or `train.iterations=5000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Remove a key, so its default applies again (e.g. `prune.output_fraction`), or a list
    /// entry (`arms.5`); applied before the `--set`s.
    #[arg(long = "unset", value_name = "KEY")]
    unsets: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Run dir (default `runs/<name>-<hash>`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
}

/// How a run trains and what it shows, whatever runs it (`lth run`, `lth sweep`).
#[derive(Args, Clone)]
struct RunFlags {
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Folder that also receives the run's figure (under `<dir>/<run name>/`).
    #[arg(long, default_value = "plots")]
    plots_dir: PathBuf,
    /// Print nothing but errors and warnings (a replica whose loss diverged).
    #[arg(long)]
    quiet: bool,
    /// Minutes between checkpoints inside a round, from which a stopped run continues
    /// (0: at every evaluation point; `off`: none, a stopped round starts over).
    #[arg(long, default_value = "10", value_parser = parse_minutes, allow_negative_numbers = true)]
    checkpoint_minutes: CheckpointMinutes,
    /// CPU threads for libtorch (default: its own choice, every core or `OMP_NUM_THREADS`).
    /// CPU results depend on it: give the same number to reproduce a run's bytes elsewhere.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

/// `--checkpoint-minutes`: a number of minutes, or none.
#[derive(Debug, Clone, Copy)]
struct CheckpointMinutes(Option<f64>);

/// A number of minutes (finite, not negative) or `off`.
fn parse_minutes(text: &str) -> Result<CheckpointMinutes, String> {
    if text == "off" {
        return Ok(CheckpointMinutes(None));
    }
    match text.parse::<f64>() {
        Ok(m) if m.is_finite() && m >= 0.0 => Ok(CheckpointMinutes(Some(m))),
        _ => Err(format!(
            "`{text}` is not a number of minutes (0 or more) or `off`"
        )),
    }
}

#[derive(Args)]
struct ConfigArgs {
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// Run dir to read.
    run_dir: PathBuf,
    /// Arm name.
    #[arg(long)]
    arm: String,
    /// Seed.
    #[arg(long)]
    seed: u64,
    /// Round (0 = dense).
    #[arg(long)]
    round: u32,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// The smaller dense network the removed neurons or filters leave (structured tickets),
    /// with a JSON file of the kept units beside it.
    #[arg(long)]
    compact: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// Run dirs to report on (finished or still running), or one sweep file: its grid
    /// points, each with its seed shards merged.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Report name (default: the run dir's name for one run, `comparison` for several, the
    /// sweep's name for a sweep file).
    #[arg(long)]
    name: Option<String>,
    /// Folder holding the sweep folders, for a sweep file.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Rounds drawn in the curves figure, e.g. `0,4,8` (default: first, middle, last).
    #[arg(long, value_delimiter = ',')]
    rounds: Option<Vec<u32>>,
    #[command(flatten)]
    roots: OutputRoots,
}

#[derive(Args)]
struct StudyArgs {
    /// Run dir to read (it is not written to).
    run_dir: PathBuf,
    /// Round whose trained networks are pruned (0: the dense networks).
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Arm of a pruned round (default: the first arm that prunes its own weights).
    #[arg(long)]
    arm: Option<String>,
    /// Training batches a taylor score averages over (default: the run's
    /// `prune.score_batches`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    score_batches: Option<u32>,
    /// Training examples obd and obs score on (default: the run's `prune.score_examples`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    score_examples: Option<u32>,
    /// Output name (default: the run dir's name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    roots: OutputRoots,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// CPU threads for libtorch (default: its own choice).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

impl StudyArgs {
    /// Sets the thread count, checks the sparsities, and says which networks the study reads
    /// and where its outputs go.
    fn study(&self, sparsities: &[f64]) -> anyhow::Result<Study> {
        // A study of a portable run computes in portable mode too.
        let (_, exp) = lth::record::RunDir::open_existing(&self.run_dir)?;
        if let Some(threads) = self.threads {
            tch::set_num_threads(i32::from(threads));
        }
        lth::portable::enter(exp.reproducibility)?;
        if let Some(s) = sparsities.iter().find(|s| !(**s > 0.0 && **s < 100.0)) {
            anyhow::bail!(
                "--sparsities are percents of the weights removed, in (0, 100) (got {s})"
            );
        }
        Ok(Study {
            round: self.round,
            arm: self.arm.clone(),
            score_batches: self.score_batches,
            score_examples: self.score_examples,
            device: run_device(&exp, self.device.into())?,
            name: self
                .name
                .clone()
                .unwrap_or_else(|| run_label(&self.run_dir)),
            data_root: self.roots.data_dir.clone(),
            plots_root: self.roots.plots_dir.clone(),
        })
    }
}

#[derive(Args)]
struct PruneCurveArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Criteria, one line each (default: magnitude, taylor, obd, and obs where the network
    /// takes it).
    #[arg(long, value_delimiter = ',')]
    criteria: Vec<PruneCriterion>,
    /// Percent of the prunable weights removed.
    #[arg(long, value_delimiter = ',', default_value = "50,70,80,90,95,98,99")]
    sparsities: Vec<f64>,
}

#[derive(Args)]
struct StabilityArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Rewind iterations k the copies start from (each before the schedule's end; default:
    /// the run config's `stability.ks`, else 0).
    #[arg(long = "k", value_delimiter = ',')]
    ks: Option<Vec<u64>>,
    /// Rounds whose networks are copied: 0 the dense network, a pruned round its ticket (the
    /// round's mask on the dense weights at k) (default: `stability.rounds`, else 0).
    #[arg(long, value_delimiter = ',')]
    rounds: Option<Vec<u32>>,
    /// Copies of each network; every pair is a path (default: `stability.copies`, else 2).
    #[arg(long)]
    copies: Option<usize>,
    /// Points on each path, both ends included (default: `stability.points`, else 30).
    #[arg(long)]
    points: Option<usize>,
    /// Base of the copies' noise seeds, copy c of seed s: base + 1000 s + c (default:
    /// `stability.noise_seed`, else 1000000).
    #[arg(long)]
    noise_seed: Option<u64>,
    /// Training batches each network on a path recomputes its BatchNorm statistics on
    /// (default: `stability.bn_batches`, else 10).
    #[arg(long)]
    bn_batches: Option<usize>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

impl StabilityArgs {
    /// The run config's `[stability]` settings with the flags given here in their place.
    fn settings(&self) -> anyhow::Result<lth::config::StabilityConfig> {
        let (_, exp) = lth::record::RunDir::open_existing(&self.study.run_dir)?;
        let mut s = exp.stability;
        if let Some(ks) = &self.ks {
            s.ks.clone_from(ks);
        }
        if let Some(rounds) = &self.rounds {
            s.rounds.clone_from(rounds);
        }
        s.copies = self.copies.unwrap_or(s.copies);
        s.points = self.points.unwrap_or(s.points);
        s.noise_seed = self.noise_seed.unwrap_or(s.noise_seed);
        s.bn_batches = self.bn_batches.unwrap_or(s.bn_batches);
        Ok(s)
    }
}

#[derive(Args)]
struct SensitivityArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Criterion that ranks each tensor's weights.
    #[arg(long, value_enum, default_value_t = PruneCriterion::Magnitude)]
    criterion: PruneCriterion,
    /// Percent of a tensor's weights removed.
    #[arg(long, value_delimiter = ',', default_value = "20,40,60,70,80,90,95,98")]
    sparsities: Vec<f64>,
    /// Print the layerwise `prune` settings under which no tensor alone costs more than this
    /// much mean test accuracy (e.g. 0.01).
    #[arg(long)]
    suggest: Option<f64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

impl RunFlags {
    /// Sets libtorch's CPU thread count when `--threads` is given.
    fn set_threads(&self) {
        if let Some(threads) = self.threads {
            tch::set_num_threads(i32::from(threads));
        }
    }

    /// The options of a run into `run_dir` (its default when `None`).
    fn options(&self, run_dir: Option<PathBuf>) -> RunOptions {
        RunOptions {
            run_dir,
            figure: Some(Rc::new(RunFigures {
                plots_dir: Some(self.plots_dir.clone()),
            })),
            device: self.device.into(),
            progress: if self.quiet {
                ProgressMode::Quiet
            } else {
                ProgressMode::Auto
            },
            checkpoint_every: self.checkpoint_minutes.0.map(|minutes| {
                Duration::try_from_secs_f64(minutes * 60.0).unwrap_or(Duration::MAX)
            }),
            threads_chosen: self.threads.is_some(),
        }
    }
}

impl SourceArgs {
    fn resolve(&self) -> anyhow::Result<Experiment> {
        let source = match (&self.preset, &self.config) {
            (Some(p), _) => ConfigSource::Preset(p.clone()),
            (None, Some(c)) => ConfigSource::File(c.clone()),
            (None, None) => anyhow::bail!("give --preset NAME or --config FILE"),
        };
        Experiment::resolve_with(&source, &self.unsets, &self.sets)
    }
}

fn main() -> ExitCode {
    lth::platform::tune_allocator();
    lth::platform::ignore_file_size_signal();
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let first = msg.lines().next().unwrap_or(msg);
        warn(&format!("error: internal error: {first}"));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            warn(&format!("{} (see `lth --help`)", usage_error_line(&e)));
            return ExitCode::from(2);
        }
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            warn(&format!(
                "lth: {}",
                lth::config::one_line(&format!("{e:#}"))
            ));
            ExitCode::from(interrupt::EXIT_CODE)
        }
        Err(e) => {
            warn(&format!(
                "error: {}",
                lth::config::one_line(&format!("{e:#}"))
            ));
            ExitCode::FAILURE
        }
    }
}

/// clap's error as one line: its message with the lines that complete it (the missing
/// arguments, the possible values), without the usage and tips that follow.
fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    if parts.is_empty() {
        "error: invalid arguments".into()
    } else {
        parts.join(" ")
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let exp = args.source.resolve()?;
            args.flags.set_threads();
            lth::portable::enter(exp.reproducibility)?;
            interrupt::catch_stop_signals();
            let dir = run(&exp, &args.flags.options(args.run_dir))?;
            if !args.flags.quiet {
                say(&format!("lth: done, results in {}", dir.root().display()));
            }
            Ok(())
        }
        Command::Config(args) => {
            let exp = args.source.resolve()?;
            say(&format!(
                "# run dir: {}  (hash {})",
                default_run_dir(&exp).display(),
                config_hash(&exp)
            ));
            let toml = exp.to_toml();
            say(toml.strip_suffix('\n').unwrap_or(&toml));
            // Printed first, so that a preset can be read where its data is not.
            check(&exp)
        }
        Command::Export(args) => {
            let req = ExportRequest {
                arm: args.arm,
                seed: args.seed,
                round: args.round,
            };
            if args.compact {
                let out = export_compact(&args.run_dir, &req, &args.out)?;
                for (layer, kept, units) in &out.kept {
                    say(&format!("{layer}: {kept} of {units} units kept"));
                }
                say(&format!(
                    "lth: wrote {} tensors to {}, kept units in {}",
                    out.names.len(),
                    args.out.display(),
                    out.json.display()
                ));
                return Ok(());
            }
            let names = export(&args.run_dir, &req, &args.out)?;
            say(&format!(
                "lth: wrote {} tensors to {}",
                names.len(),
                args.out.display()
            ));
            Ok(())
        }
        Command::Report(args) => {
            if let [file] = args.run_dirs.as_slice() {
                if sweep::report::is_sweep_file(file) {
                    return sweep_report(file, &args);
                }
            }
            let name = match (&args.name, args.run_dirs.as_slice()) {
                (Some(n), _) => n.clone(),
                (None, [one]) => run_label(one),
                (None, _) => "comparison".into(),
            };
            let opts = ReportOptions {
                name,
                rounds: args.rounds,
                data_root: args.roots.data_dir,
                plots_root: args.roots.plots_dir,
            };
            let out = report(&args.run_dirs, &opts)?;
            say_report(&out);
            Ok(())
        }
        Command::PruneCurve(args) => {
            let req = PruneCurveRequest {
                study: args.study.study(&args.sparsities)?,
                criteria: args.criteria,
                sparsities: args.sparsities,
            };
            let out = prune_curve(&args.study.run_dir, &req)?;
            for s in &out.skipped {
                say(&format!(
                    "lth: no network was pruned to {s}% (each is as sparse already)"
                ));
            }
            say(&format!("data   {}", out.data_file.display()));
            say(&format!("figure {}.svg (.png)", out.figure.display()));
            Ok(())
        }
        Command::Stability(args) => {
            let req = StabilityRequest {
                settings: args.settings()?,
                progress: if args.quiet {
                    ProgressMode::Quiet
                } else {
                    ProgressMode::Auto
                },
            };
            let out = stability(&args.study.run_dir, &args.study.study(&[])?, &req)?;
            for data in [&out.paths, &out.barriers, &out.report.summary] {
                say(&format!("data   {}", data.display()));
            }
            for figure in [&out.report.paths_figure, &out.report.instability_figure] {
                say(&format!("figure {}.svg (.png)", figure.display()));
            }
            Ok(())
        }
        Command::Sensitivity(args) => {
            if let Some(b) = args.suggest.filter(|b| !(*b >= 0.0 && b.is_finite())) {
                anyhow::bail!("--suggest is a drop of test accuracy, >= 0 (got {b})");
            }
            let req = SensitivityRequest {
                study: args.study.study(&args.sparsities)?,
                criterion: args.criterion,
                sparsities: args.sparsities,
                suggest: args.suggest,
            };
            let out = sensitivity(&args.study.run_dir, &req)?;
            say(&format!("data   {}", out.data_file.display()));
            say(&format!("figure {}.svg (.png)", out.figure.display()));
            if let Some(text) = out.suggestion {
                say(text.trim_end());
            }
            Ok(())
        }
        Command::Supermask(args) => {
            let req = lth::analysis::supermask::SupermaskRequest {
                study: args.study.study(&[])?,
                constant: args.constant,
                criteria: args.criteria.clone(),
                rounds: args.rounds.clone(),
            };
            let out = lth::analysis::supermask::supermask(&args.study.run_dir, &req)?;
            say(&format!(
                "data   {} ({} rows)",
                out.data_file.display(),
                out.rows
            ));
            say(&format!("figure {}.svg (.png)", out.figure.display()));
            Ok(())
        }
        Command::Sweep(command) => sweep_command(command),
        Command::Masks(MasksCommand::Compare(args)) => {
            let name = match (&args.name, args.run_dirs.as_slice()) {
                (Some(n), _) => n.clone(),
                (None, [one]) => run_label(one),
                (None, _) => "masks".into(),
            };
            let req = lth::analysis::overlap::OverlapRequest {
                name,
                data_root: args.roots.data_dir,
                plots_root: args.roots.plots_dir,
            };
            let out = lth::analysis::overlap::compare_masks(&args.run_dirs, &req)?;
            say(&format!(
                "lth: {} pairs of masks compared: {}, {}, figure {}.svg (.png)",
                out.pairs,
                out.pairs_csv.display(),
                out.survival_csv.display(),
                out.figure.display()
            ));
            if let (Some(first), Some(last)) = (out.heatmaps.first(), out.heatmaps.last()) {
                say(&format!(
                    "lth: {} heatmaps of pairs x layers, {}.svg (.png) to {}.svg",
                    out.heatmaps.len(),
                    first.display(),
                    last.display()
                ));
            }
            Ok(())
        }
        Command::Presets => {
            for name in preset_names() {
                let summary = preset_summary(name).unwrap_or_default();
                say(&format!("{name:<18} {summary}"));
            }
            Ok(())
        }
    }
}

/// What `lth report` wrote, and which runs it drew as they stand.
fn say_report(out: &lth::report::ReportOutput) {
    for (label, done, expected) in &out.partial {
        say(&format!(
            "lth: partial run {label}: {done} of {expected} rounds complete; drawn as it stands"
        ));
    }
    for f in &out.data_files {
        say(&format!("data   {}", f.display()));
    }
    for f in &out.figures {
        say(&format!("figure {}.svg (.png)", f.display()));
    }
}

/// `lth report SWEEP_FILE`: one run per grid point, its seed shards merged; each point's
/// axis values are said and become columns of the tidy data.
fn sweep_report(file: &std::path::Path, args: &ReportArgs) -> anyhow::Result<()> {
    let sweep = Sweep::load(file, &args.runs_dir)?;
    let points = sweep::report::point_runs(&sweep)?;
    for text in &points.not_started {
        say(&format!(
            "lth: grid point {text}: no task has started; left out"
        ));
    }
    if points.runs.is_empty() {
        anyhow::bail!(
            "no task of sweep {} has started (run dirs under {})",
            sweep.file.name,
            sweep.dir.display()
        );
    }
    for run in &points.runs {
        let axes: Vec<String> = run.axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        say(&format!(
            "{}: {} (seeds {:?})",
            run.label,
            if axes.is_empty() {
                "(base)".to_string()
            } else {
                axes.join(" ")
            },
            run.config.seeds
        ));
    }
    let opts = ReportOptions {
        name: args.name.clone().unwrap_or_else(|| sweep.file.name.clone()),
        rounds: args.rounds.clone(),
        data_root: args.roots.data_dir.clone(),
        plots_root: args.roots.plots_dir.clone(),
    };
    let out = lth::report::report_runs(&points.runs, &opts)?;
    say_report(&out);
    Ok(())
}

/// `lth sweep ...`.
fn sweep_command(command: SweepCommand) -> anyhow::Result<()> {
    match command {
        SweepCommand::Plan(args) => {
            let sweep = Sweep::load(&args.file, &args.runs_dir)?;
            sweep.check()?;
            for line in plan_lines(&sweep) {
                say(&line);
            }
            Ok(())
        }
        SweepCommand::Run(args) => {
            let sweep = Sweep::load(&args.sweep.file, &args.sweep.runs_dir)?;
            sweep.check()?;
            if args.executor == Executor::Slurm {
                let mut sweep = sweep;
                sweep.file.slurm = sweep.file.slurm.overridden_by(&args.slurm.settings())?;
                return submit_to_slurm(&sweep, &args);
            }
            if args.slurm.any() {
                anyhow::bail!(
                    "--partition, --time, --cpus-per-task, --mem, --gpus, --max-running and --sbatch are for `--executor slurm`"
                );
            }
            // Tasks started here run in this process's mode (their own processes re-enter it).
            lth::portable::enter(sweep.reproducibility())?;
            interrupt::catch_stop_signals();
            let outcomes = if args.jobs > 1 {
                let command = task_command(&args);
                run_in_parallel(&sweep, &command, usize::from(args.jobs), args.flags.quiet)?
            } else {
                args.flags.set_threads();
                let plots = args.flags.plots_dir.join(&sweep.file.name);
                let options = |task: &Task| {
                    RunFlags {
                        plots_dir: plots.clone(),
                        ..args.flags.clone()
                    }
                    .options(Some(task.run_dir.clone()))
                };
                run_tasks(&sweep, &options, args.flags.quiet)?
            };
            let failed: Vec<String> = outcomes
                .iter()
                .filter_map(|(i, o)| match o {
                    TaskOutcome::Failed(line) => Some(format!("task {i}: {line}")),
                    TaskOutcome::Done => None,
                })
                .collect();
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {} task(s) failed: {}",
                    failed.len(),
                    outcomes.len(),
                    failed.join("; ")
                );
            }
            if !args.flags.quiet {
                say(&format!(
                    "lth sweep: all {} task(s) complete in {}",
                    outcomes.len(),
                    sweep.dir.display()
                ));
            }
            Ok(())
        }
        SweepCommand::Status(args) => {
            let sweep = Sweep::load(&args.file, &args.runs_dir)?;
            for line in status_lines(&sweep)? {
                say(&line);
            }
            Ok(())
        }
        SweepCommand::Task(args) => {
            let sweep = Sweep::load(&args.sweep.file, &args.sweep.runs_dir)?;
            let task = sweep.task(args.index)?;
            args.flags.set_threads();
            lth::portable::enter(task.exp.reproducibility)?;
            interrupt::catch_stop_signals();
            let flags = RunFlags {
                plots_dir: args.flags.plots_dir.join(&sweep.file.name),
                ..args.flags.clone()
            };
            run(&task.exp, &flags.options(Some(task.run_dir.clone())))?;
            Ok(())
        }
    }
}

/// `lth sweep run --executor slurm`: submits the tasks that are neither complete nor in
/// Slurm's queue as one array job.
fn submit_to_slurm(sweep: &Sweep, args: &SweepRunArgs) -> anyhow::Result<()> {
    let queue = slurm::queued(sweep)?;
    let mut pending = Vec::new();
    for task in &sweep.tasks {
        let state = task_state(sweep, task, Some(&queue))?;
        if !matches!(
            state,
            TaskState::Done | TaskState::Queued | TaskState::Running { .. }
        ) {
            pending.push(task.index);
        }
    }
    if pending.is_empty() {
        say(&format!(
            "lth sweep: nothing to submit: {} task(s) complete or in Slurm's queue",
            sweep.tasks.len()
        ));
        return Ok(());
    }
    let s = &sweep.file.slurm;
    let exe =
        std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the lth binary: {e}"))?;
    let device = s.gpus.map(|_| "cuda");
    let threads = s.cpus_per_task.unwrap_or(1) as usize;
    let mut command = vec![exe.display().to_string()];
    command.extend(task_args(args, device, threads, &slurm::absolute));
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("cannot read the current folder: {e}"))?;
    let text = slurm::script(sweep, &pending, &cwd, &command);
    let job = slurm::submit(sweep, &text)?;
    say(&format!(
        "lth sweep: submitted job {job}, {} task(s) ({}), script {}; `lth sweep status {}` follows them",
        pending.len(),
        slurm::array_list(&pending),
        slurm::script_path(sweep).display(),
        if args.sweep.runs_dir == std::path::Path::new("runs") {
            args.sweep.file.display().to_string()
        } else {
            format!(
                "{} --runs-dir {}",
                args.sweep.file.display(),
                args.sweep.runs_dir.display()
            )
        }
    ));
    Ok(())
}

/// `lth sweep status`'s lines: one per task, then the counts of each state.
fn status_lines(sweep: &Sweep) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let submitted = slurm::script_path(sweep).exists();
    let queue = if submitted {
        Some(slurm::queued(sweep)?)
    } else {
        None
    };
    let ended = if submitted {
        slurm::ended(sweep)
    } else {
        Default::default()
    };
    for task in &sweep.tasks {
        let state = task_state(sweep, task, queue.as_ref())?;
        let detail = match &state {
            TaskState::Running { done, total } | TaskState::Stopped { done, total } => {
                format!(" ({done} of {total} rounds complete)")
            }
            TaskState::Failed { line, log } => format!(" ({}): {line}", log.display()),
            TaskState::NotStarted | TaskState::Queued | TaskState::Done => String::new(),
        };
        // How Slurm's accounting says the task's last job ended, where it did not complete.
        let slurm_end = match (&state, ended.get(&task.index)) {
            (
                TaskState::Stopped { .. } | TaskState::Failed { .. } | TaskState::NotStarted,
                Some(end),
            ) if end != "COMPLETED" => {
                format!(" [Slurm: {end}]")
            }
            _ => String::new(),
        };
        lines.push(format!(
            "{} | {} | {:?} | {}{detail}{slurm_end}",
            task.index,
            task.point_text(),
            task.exp.seeds,
            state.word()
        ));
        match counts.iter_mut().find(|(w, _)| *w == state.word()) {
            Some((_, n)) => *n += 1,
            None => counts.push((state.word(), 1)),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    lines.push(format!(
        "{} task(s) in {}: {}",
        sweep.tasks.len(),
        sweep.dir.display(),
        summary.join(", ")
    ));
    Ok(lines)
}

/// The child process of `lth sweep run --jobs N` for a task index: `lth sweep task` with the
/// run's options, quiet, and its share of the CPU cores unless `--threads` was given.
fn task_command(args: &SweepRunArgs) -> impl Fn(usize) -> std::process::Command + '_ {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lth"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args
        .flags
        .threads
        .map_or_else(|| (cores / usize::from(args.jobs)).max(1), usize::from);
    let task_args = task_args(args, None, threads, &|p| p.to_path_buf());
    move |index| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&task_args).args(["--index", &index.to_string()]);
        cmd
    }
}

/// The words after the binary of an `lth sweep task` for `args` (without `--index`): the
/// sweep file, runs and plots folders (through `path`), the device (`device`, else the run's),
/// checkpoint interval, `threads`, and `--quiet` when `lth sweep run` was given it. Shared by `--jobs` and the Slurm script.
fn task_args(
    args: &SweepRunArgs,
    device: Option<&str>,
    threads: usize,
    path: &dyn Fn(&std::path::Path) -> PathBuf,
) -> Vec<String> {
    let f = &args.flags;
    let device = device.map_or_else(
        || {
            let d = f.device.to_possible_value().expect("a device name");
            d.get_name().to_string()
        },
        String::from,
    );
    let minutes = f
        .checkpoint_minutes
        .0
        .map_or_else(|| "off".to_string(), |m| m.to_string());
    let shown = |p: &std::path::Path| path(p).display().to_string();
    let mut words = vec![
        "sweep".into(),
        "task".into(),
        shown(&args.sweep.file),
        "--runs-dir".into(),
        shown(&args.sweep.runs_dir),
        "--plots-dir".into(),
        shown(&f.plots_dir),
        "--device".into(),
        device,
        "--checkpoint-minutes".into(),
        minutes,
        "--threads".into(),
        threads.to_string(),
    ];
    if f.quiet {
        words.push("--quiet".into());
    }
    words
}

/// `lth sweep plan`'s lines: a header, one line per task, the totals.
fn plan_lines(sweep: &Sweep) -> Vec<String> {
    let axes: Vec<&str> = sweep.file.axes.iter().map(|a| a.key.as_str()).collect();
    let mut lines = vec![format!(
        "sweep {}: {} task(s) in {}; axes: {}",
        sweep.file.name,
        sweep.tasks.len(),
        sweep.dir.display(),
        if axes.is_empty() {
            "none".to_string()
        } else {
            axes.join(", ")
        }
    )];
    lines.push("task | point | seeds | replica-steps | run dir".into());
    let mut total = 0;
    for task in &sweep.tasks {
        let steps = task.replica_steps();
        total += steps;
        lines.push(format!(
            "{} | {} | {:?} | {steps} | {}",
            task.index,
            task.point_text(),
            task.exp.seeds,
            task.run_dir.display()
        ));
    }
    lines.push(format!(
        "total: {} task(s), {total} replica-steps",
        sweep.tasks.len()
    ));
    lines
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}
