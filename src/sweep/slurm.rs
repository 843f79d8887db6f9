//! The Slurm executor: one sbatch array script per submission (`<sweep dir>/sweep.sbatch`),
//! each array task an `lth sweep task FILE --index $SLURM_ARRAY_TASK_ID` writing to its log
//! file, submitted with `sbatch`; the queue read back with `squeue`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::status::log_path;
use super::Sweep;

/// Where the submitted script is written: `<sweep dir>/sweep.sbatch`.
pub fn script_path(sweep: &Sweep) -> PathBuf {
    sweep.dir.join("sweep.sbatch")
}

/// The job name of the sweep's array jobs (`slurm.job_name`, default `lth-<sweep name>`).
pub fn job_name(sweep: &Sweep) -> String {
    sweep
        .file
        .slurm
        .job_name
        .clone()
        .unwrap_or_else(|| format!("lth-{}", sweep.file.name))
}

/// Indices in Slurm's compact array form: `0-3,5,7-8` (sorted, each once).
pub fn array_list(indices: &[usize]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// A word for a shell script: as it is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The sbatch array script running tasks `indices` of `sweep`: `#SBATCH` lines from the
/// sweep file's `[slurm]` table, then, from the folder `cwd`, `command` (the `lth sweep task`
/// invocation, absolute paths) with `--index $SLURM_ARRAY_TASK_ID` appended.
pub fn script(sweep: &Sweep, indices: &[usize], cwd: &Path, command: &[String]) -> String {
    let s = &sweep.file.slurm;
    let logs = log_path(&absolute(&sweep.dir), 0);
    let log_pattern = logs.with_file_name("task-%a.log");
    let mut array = array_list(indices);
    if let Some(m) = s.max_running {
        array.push_str(&format!("%{m}"));
    }
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# lth sweep {}: tasks {array}", sweep.file.name),
        format!("#SBATCH --job-name={}", job_name(sweep)),
        format!("#SBATCH --array={array}"),
        format!("#SBATCH --output={}", log_pattern.display()),
        format!("#SBATCH --cpus-per-task={}", s.cpus_per_task.unwrap_or(1)),
    ];
    let optional = [
        ("partition", &s.partition),
        ("time", &s.time),
        ("mem", &s.mem),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            lines.push(format!("#SBATCH --{key}={v}"));
        }
    }
    if let Some(g) = s.gpus {
        lines.push(format!("#SBATCH --gres=gpu:{g}"));
    }
    lines.push(format!("#SBATCH --signal=B:USR1@{WARNING_SECONDS}"));
    lines.push("#SBATCH --requeue".into());
    lines.push("#SBATCH --open-mode=append".into());
    lines.extend(s.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.push(String::new());
    lines.push(format!("cd {}", shell_word(&cwd.display().to_string())));
    let words: Vec<String> = command.iter().map(|w| shell_word(w)).collect();
    lines.push(format!(
        "{} --index \"$SLURM_ARRAY_TASK_ID\" &",
        words.join(" ")
    ));
    lines.extend(PREEMPTION.lines().map(String::from));
    lines.join("\n") + "\n"
}

/// Seconds before the time limit at which Slurm warns the batch script (`--signal=B:USR1@N`).
const WARNING_SECONDS: u32 = 120;

/// The end of the batch script: Slurm's warning (USR1, sent to this script only) is passed on
/// to `lth`, which writes a checkpoint and exits with [`crate::interrupt::EXIT_CODE`]; the
/// task is then requeued and continues from it. (Preemption and `scancel` send SIGTERM to
/// every process of the job: `lth` checkpoints and stops the same way, and Slurm requeues a
/// preempted task itself.)
const PREEMPTION: &str = r#"lth=$!
trap 'kill -USR1 "$lth" 2>/dev/null' USR1
wait "$lth"; status=$?
# A trapped signal ends `wait` early: wait again until lth itself has exited.
while kill -0 "$lth" 2>/dev/null; do wait "$lth"; status=$?; done
if [ "$status" -eq 75 ]; then
  echo "lth sweep: task $SLURM_ARRAY_TASK_ID stopped at a checkpoint; requeued"
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
fi
exit "$status""#;

/// `path` made absolute against the current folder.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Writes `text` as the sweep's script (and its log folder) and submits it with `sbatch`;
/// the job id.
pub fn submit(sweep: &Sweep, text: &str) -> Result<String> {
    let path = script_path(sweep);
    let logs = log_path(&sweep.dir, 0);
    let logs = logs.parent().expect("a logs folder");
    std::fs::create_dir_all(logs).with_context(|| format!("cannot create {}", logs.display()))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .context("cannot run sbatch (is Slurm installed here? tests/slurm/cluster.sh starts a one-node cluster)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "sbatch refused {}: {}",
            path.display(),
            err.lines().next().unwrap_or("").trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(id.split(';').next().unwrap_or(&id).to_string())
}

/// The sweep's array tasks in Slurm's queue (this user's jobs of its job name), by index:
/// their state as `squeue` says it (`PENDING`, `RUNNING`, ...).
pub fn queued(sweep: &Sweep) -> Result<BTreeMap<usize, String>> {
    let out = Command::new("squeue")
        .args(["--me", "-h", "-r", "-n", &job_name(sweep), "-o", "%K %T"])
        .output()
        .context("cannot run squeue (is Slurm installed here?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("squeue failed: {}", err.lines().next().unwrap_or("").trim());
    }
    let mut tasks = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        if let (Some(index), Some(state)) = (words.next(), words.next()) {
            if let Ok(i) = index.parse::<usize>() {
                tasks.insert(i, state.to_string());
            }
        }
    }
    Ok(tasks)
}

/// The sweep's array tasks that Slurm's accounting knows as ended, by index: the state of
/// each one's latest job (`COMPLETED`, `CANCELLED`, `TIMEOUT`, `OUT_OF_MEMORY`, `FAILED`,
/// `PREEMPTED`, `NODE_FAIL`, ...). Empty where `sacct` cannot answer (no accounting storage,
/// as on a cluster without `slurmdbd`).
pub fn ended(sweep: &Sweep) -> BTreeMap<usize, String> {
    let out = Command::new("sacct")
        .args([
            "-n",
            "-X",
            "-P",
            "--name",
            &job_name(sweep),
            "-o",
            "JobID,State",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => parse_sacct(&String::from_utf8_lossy(&out.stdout)),
        _ => BTreeMap::new(),
    }
}

/// `sacct -n -X -P -o JobID,State` lines (`17_3|CANCELLED by 0`) as the last word of the
/// state of each array index's latest job; lines of other jobs, of pending or running ones,
/// and of whole arrays (`17_[4-7]`) are left out.
fn parse_sacct(text: &str) -> BTreeMap<usize, String> {
    let mut latest: BTreeMap<usize, (u64, String)> = BTreeMap::new();
    for line in text.lines() {
        let Some((id, state)) = line.split_once('|') else {
            continue;
        };
        let Some((job, index)) = id.split_once('_') else {
            continue;
        };
        let (Ok(job), Ok(index)) = (job.parse::<u64>(), index.parse::<usize>()) else {
            continue;
        };
        let state = state.split_whitespace().next().unwrap_or("").to_string();
        if matches!(
            state.as_str(),
            "" | "PENDING" | "RUNNING" | "REQUEUED" | "SUSPENDED"
        ) {
            continue;
        }
        if latest.get(&index).is_none_or(|(j, _)| *j <= job) {
            latest.insert(index, (job, state));
        }
    }
    latest.into_iter().map(|(i, (_, s))| (i, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_join_runs_of_indices() {
        assert_eq!(array_list(&[7, 0, 1, 2, 3, 5, 8, 3]), "0-3,5,7-8");
        assert_eq!(array_list(&[4]), "4");
        assert_eq!(shell_word("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(shell_word("/plain/path-1.toml"), "/plain/path-1.toml");
    }

    #[test]
    fn sacct_lines_give_each_indexs_latest_ended_state() {
        let text = "17_0|COMPLETED\n17_1|CANCELLED by 0\n17_2|RUNNING\n17_[3-4]|PENDING\n21_1|TIMEOUT\n9_1|FAILED\n21_5|OUT_OF_MEMORY\nbad line\n";
        let states = parse_sacct(text);
        let want: BTreeMap<usize, String> =
            [(0, "COMPLETED"), (1, "TIMEOUT"), (5, "OUT_OF_MEMORY")]
                .into_iter()
                .map(|(i, s)| (i, s.to_string()))
                .collect();
        assert_eq!(states, want);
    }

    #[test]
    fn the_batch_script_requeues_on_the_status_of_a_checkpointed_stop() {
        let test = format!("\"$status\" -eq {} ]", crate::interrupt::EXIT_CODE);
        assert!(PREEMPTION.contains(&test), "{PREEMPTION}");
    }
}
