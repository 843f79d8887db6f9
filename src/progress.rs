//! Progress of a run: a bar with round, iteration, accuracy and ETA on a terminal; one plain
//! line per round otherwise (logs stay short).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::{EvalPoint, Observer};

/// Prints `text` and a newline on stdout. A stdout that cannot be written (a pipe whose
/// reader has gone, as in `lth run ... | head`) is not an error: the line is dropped, so a run
/// goes on and writes its results, and a listing ends quietly.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints `text` and a newline on stderr, dropping it where stderr cannot be written (as
/// [`say`]).
pub fn warn(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bar on a terminal, lines otherwise.
    Auto,
    /// Plain lines only.
    Lines,
    /// Nothing.
    Quiet,
}

/// Reports a run's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    round_label: String,
    span_end: u64,
    /// Replicas the current span trains: each iteration advances the bar by this many
    /// replica-steps, the unit of the run's total.
    span_replicas: u64,
    iteration: u64,
    val_accuracy: Option<f64>,
    /// The "continues from its checkpoint" lines said, so that the training groups of a round
    /// resuming at the same iteration say it once.
    resume_lines: BTreeSet<String>,
}

impl Progress {
    /// A reporter for a run of `total_steps` replica-steps (iterations times the replicas that
    /// train them).
    pub fn new(mode: ProgressMode, total_steps: u64) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let bar = ProgressBar::new(total_steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {wide_bar} {percent:>3}% [{elapsed_precise}, ETA {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self {
            lines: mode != ProgressMode::Quiet && bar.is_none(),
            bar,
            round_label: String::new(),
            span_end: 0,
            span_replicas: 1,
            iteration: 0,
            val_accuracy: None,
            resume_lines: BTreeSet::new(),
        }
    }

    /// Prints a line (above the bar on a terminal).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.lines => say(text),
            None => {}
        }
    }

    /// A round (or one cohort of it) of `replicas` replicas starts training from `start` to
    /// `end`.
    pub fn start_span(
        &mut self,
        round: u32,
        rounds: u32,
        (start, end): (u64, u64),
        replicas: usize,
    ) {
        self.start_stage(format!("round {round}/{rounds}"), (start, end), replicas);
    }

    /// A stage of work named `label` (a round, or a study's `k = 100`) starts training
    /// `replicas` replicas from `start` to `end`.
    pub fn start_stage(&mut self, label: String, (start, end): (u64, u64), replicas: usize) {
        self.round_label = label;
        self.iteration = start;
        self.span_end = end;
        self.span_replicas = replicas as u64;
        self.val_accuracy = None;
        self.show();
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn show(&self) {
        if let Some(bar) = &self.bar {
            let acc = self
                .val_accuracy
                .map_or_else(String::new, |a| format!(" val acc {a:.4}"));
            bar.set_message(format!(
                "{} it {}/{}{acc}",
                self.round_label, self.iteration, self.span_end
            ));
        }
    }
}

impl Observer for Progress {
    fn steps(&mut self, steps: u64) {
        self.iteration += steps;
        if let Some(bar) = &self.bar {
            bar.inc(steps * self.span_replicas);
        }
        self.show();
    }

    fn diverged(&mut self, label: &str, iteration: u64) {
        let text = format!(
            "warning: {label} diverged (non-finite loss) at iteration {iteration}; it stops training and its rows are marked diverged"
        );
        match &self.bar {
            Some(bar) => bar.println(&text),
            None => warn(&text),
        }
    }

    fn resumed(&mut self, iteration: u64) {
        let text = format!(
            "lth: {} continues from its checkpoint at iteration {iteration}",
            self.round_label
        );
        if self.resume_lines.insert(text.clone()) {
            self.line(&text);
        }
        if let Some(bar) = &self.bar {
            // The iterations skipped were not trained now: keep them out of the rate.
            bar.reset_eta();
        }
    }

    fn evaluated(&mut self, point: &EvalPoint) {
        let mean = point.val_accuracy.iter().sum::<f64>() / point.val_accuracy.len() as f64;
        self.val_accuracy = Some(mean);
        self.show();
    }
}
