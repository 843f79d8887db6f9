//! The sweep file: a base config (a preset or a config file, plus `set` overrides), grid axes
//! (config keys, each with a list of values) and how the seeds split into tasks. Everything is
//! checked when the file is read, before anything runs or is submitted.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// A sweep file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    name: Option<String>,
    preset: Option<String>,
    config: Option<PathBuf>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    seeds_per_task: Option<i64>,
    #[serde(default)]
    slurm: SlurmSettings,
}

/// The `[slurm]` table: what each array task of `lth sweep run --executor slurm` asks for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// `--partition` (default: the cluster's default partition).
    pub partition: Option<String>,
    /// `--time`, in Slurm's forms (`"30"`, `"2:00:00"`, `"1-00:00:00"`).
    pub time: Option<String>,
    /// `--cpus-per-task`, also the task's `--threads` (default 1).
    pub cpus_per_task: Option<u32>,
    /// `--mem` (`"8G"`).
    pub mem: Option<String>,
    /// `--gres=gpu:G` (the task then runs with `--device cuda`).
    pub gpus: Option<u32>,
    /// Array tasks running at once (`--array=...%M`).
    pub max_running: Option<u32>,
    /// `--job-name` (default `lth-<sweep name>`).
    pub job_name: Option<String>,
    /// More `#SBATCH` options, each as written after `#SBATCH ` (`"--account=lab"`).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// Where a sweep's base config comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    /// A bundled preset.
    Preset(String),
    /// A config file (a relative path is taken from the sweep file's folder).
    Config(PathBuf),
}

/// One grid axis: a config key (dotted path, as `--set` takes it) and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The dotted key, e.g. `prune.strategy`.
    pub key: String,
    /// The values, in the file's order.
    pub values: Vec<toml::Value>,
}

/// A sweep file, read and checked in form (the configs it makes are checked by
/// [`super::Sweep::load`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepFile {
    /// The sweep's name (default: the file's stem); its folder is `runs/<name>`.
    pub name: String,
    /// The base config.
    pub base: Base,
    /// Overrides applied to the base, as `(key, value)`.
    pub set: Vec<(String, toml::Value)>,
    /// The axes, in key order; the first varies slowest.
    pub axes: Vec<Axis>,
    /// Seeds per task (`None`: all of the base's seeds in one task).
    pub seeds_per_task: Option<usize>,
    /// What Slurm array tasks ask for.
    pub slurm: SlurmSettings,
}

impl SweepFile {
    /// Reads and checks the sweep file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep file {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into());
        let folder = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, &stem, folder)
            .with_context(|| format!("invalid sweep file {}", path.display()))
    }

    /// Parses sweep file text; `stem` names the sweep by default and `folder` anchors a
    /// relative `config` path.
    pub fn parse(text: &str, stem: &str, folder: &Path) -> Result<Self> {
        let written: Written =
            toml::from_str(text).map_err(|e| anyhow!(crate::config::one_line(&e.to_string())))?;
        let name = written.name.unwrap_or_else(|| stem.to_string());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            bail!(
                "`name` must be a folder name of letters, digits, `-`, `_` and `.` (got {name:?})"
            );
        }
        let base = match (written.preset, written.config) {
            (Some(p), None) => Base::Preset(p),
            (None, Some(c)) => Base::Config(folder.join(c)),
            (Some(_), Some(_)) => bail!("give `preset` or `config`, not both"),
            (None, None) => {
                bail!("give the base config: `preset = \"NAME\"` or `config = \"FILE\"`")
            }
        };
        let mut set = Vec::new();
        flatten(&written.set, "", &mut |key, value| {
            set.push((key, value.clone()));
            Ok(())
        })?;
        let mut axes: Vec<Axis> = Vec::new();
        flatten(&written.grid, "", &mut |key, value| {
            let toml::Value::Array(values) = value else {
                bail!("grid axis `{key}` must be a list of values (got {value})");
            };
            if values.is_empty() {
                bail!("grid axis `{key}` has no values");
            }
            if axes.iter().any(|a| a.key == key) {
                bail!("two grid axes set `{key}`");
            }
            axes.push(Axis {
                key,
                values: values.clone(),
            });
            Ok(())
        })?;
        axes.sort_by(|a, b| a.key.cmp(&b.key));
        for axis in &axes {
            if axis.key == "seeds" {
                bail!("grid axis `seeds`: seeds are not an axis; list them in the base config and split them with `seeds_per_task`");
            }
            if axis.key == "name" {
                bail!("grid axis `name`: a sweep's tasks share the base config's name");
            }
            if set.iter().any(|(k, _)| *k == axis.key) {
                bail!("`{0}` is both in `set` and a grid axis", axis.key);
            }
            for (i, v) in axis.values.iter().enumerate() {
                if axis.values[..i].contains(v) {
                    bail!("grid axis `{}` lists {v} twice", axis.key);
                }
            }
        }
        let seeds_per_task = match written.seeds_per_task {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => bail!("`seeds_per_task` must be at least 1 (got {n})"),
        };
        check_slurm(&written.slurm)?;
        Ok(Self {
            name,
            base,
            set,
            axes,
            seeds_per_task,
            slurm: written.slurm,
        })
    }
}

impl SlurmSettings {
    /// These settings with each value `flags` gives in place of the file's (command-line
    /// options over the sweep file), checked as the file's are.
    pub fn overridden_by(&self, flags: &SlurmSettings) -> Result<SlurmSettings> {
        let pick = |flag: &Option<String>, file: &Option<String>| flag.clone().or(file.clone());
        let settings = SlurmSettings {
            partition: pick(&flags.partition, &self.partition),
            time: pick(&flags.time, &self.time),
            cpus_per_task: flags.cpus_per_task.or(self.cpus_per_task),
            mem: pick(&flags.mem, &self.mem),
            gpus: flags.gpus.or(self.gpus),
            max_running: flags.max_running.or(self.max_running),
            job_name: pick(&flags.job_name, &self.job_name),
            extra: self.extra.iter().chain(&flags.extra).cloned().collect(),
        };
        check_slurm(&settings)?;
        Ok(settings)
    }
}

/// Refuses `[slurm]` values Slurm would reject or that could break the script's lines.
fn check_slurm(slurm: &SlurmSettings) -> Result<()> {
    let words = [
        ("partition", &slurm.partition),
        ("time", &slurm.time),
        ("mem", &slurm.mem),
        ("job_name", &slurm.job_name),
    ];
    for (key, value) in words {
        if let Some(v) = value {
            if v.is_empty()
                || v.chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c == '"')
            {
                bail!("`slurm.{key}` must be one word without quotes (got {v:?})");
            }
        }
    }
    if let Some(t) = &slurm.time {
        if !t
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
        {
            bail!("`slurm.time` must be minutes or [D-]H:MM:SS (got {t:?})");
        }
    }
    for (key, value) in [
        ("cpus_per_task", slurm.cpus_per_task),
        ("max_running", slurm.max_running),
    ] {
        if value == Some(0) {
            bail!("`slurm.{key}` must be at least 1");
        }
    }
    for line in &slurm.extra {
        if !line.starts_with("--") || line.contains('\n') {
            bail!("`slurm.extra` entries are sbatch options on one line, starting with `--` (got {line:?})");
        }
    }
    Ok(())
}

/// Calls `each(dotted key, value)` for every leaf of `table`: a nested table is a deeper key
/// (`[grid.prune] strategy = [...]` is `prune.strategy`), except under
/// `prune.layer_fractions`, whose entries are tensor names.
fn flatten(
    table: &toml::Table,
    prefix: &str,
    each: &mut dyn FnMut(String, &toml::Value) -> Result<()>,
) -> Result<()> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) if path != "prune.layer_fractions" => {
                flatten(inner, &path, each)?
            }
            _ => each(path, value)?,
        }
    }
    Ok(())
}
