//! Progress: a bar with ETA, cost and validation accuracy on a terminal; the document's
//! periodic cost lines when output goes to a file or pipe.

use super::{Callback, RunInfo, StepInfo, TrainingView};
use crate::Result;
use crate::train::{History, Record};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};

/// Shows training progress. Build it with [`Progress::auto`] or [`Progress::lines`].
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: Option<Box<dyn Write + Send>>,
    info: Option<RunInfo>,
    log_now: bool,
    cost: Option<f64>,
    val_accuracy: Option<f64>,
}

impl Progress {
    /// A bar on standard error when it is a terminal, else lines on standard output. With
    /// `lines_too`, the lines are also printed above the bar.
    #[allow(
        clippy::expect_used,
        reason = "the template is a constant, checked by the tests"
    )]
    pub fn auto(lines_too: bool) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
                )
                .expect("the template is valid"),
            );
            Progress {
                bar: Some(bar),
                lines: lines_too.then(|| Box::new(std::io::stdout()) as Box<dyn Write + Send>),
                ..Self::empty()
            }
        } else {
            Self::lines(Box::new(std::io::stdout()))
        }
    }

    /// Only lines, written to `out`.
    pub fn lines(out: Box<dyn Write + Send>) -> Self {
        Progress {
            lines: Some(out),
            ..Self::empty()
        }
    }

    fn empty() -> Self {
        Progress {
            bar: None,
            lines: None,
            info: None,
            log_now: false,
            cost: None,
            val_accuracy: None,
        }
    }

    fn say(&mut self, line: String) {
        match (&self.bar, &mut self.lines) {
            (Some(bar), Some(_)) => bar.println(line),
            (None, Some(out)) => {
                // A closed pipe must not stop training.
                let _ = writeln!(out, "{line}");
            }
            _ => {}
        }
    }

    fn message(&self) -> String {
        let mut msg = String::new();
        if let Some(c) = self.cost {
            msg.push_str(&format!("cost {c:.4}"));
        }
        if let Some(a) = self.val_accuracy {
            msg.push_str(&format!("  val acc {a:.3}"));
        }
        msg
    }
}

impl Callback for Progress {
    fn on_start(&mut self, info: &RunInfo) {
        if let Some(bar) = &self.bar {
            bar.set_length(info.total_steps as u64);
        }
        self.info = Some(info.clone());
    }

    fn on_step(&mut self, step: &StepInfo, _view: &dyn TrainingView) -> Result<()> {
        self.log_now = step.log;
        if let Some(c) = step.cost {
            self.cost = Some(c);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(step.step as u64 + 1);
            if step.cost.is_some() {
                bar.set_message(self.message());
            }
        }
        let by_epochs = self.info.as_ref().is_some_and(|i| i.by_epochs);
        if let (true, false, Some(c)) = (step.log, by_epochs, step.cost) {
            self.say(format!("Cost after iteration {}: {c:.6}", step.step));
        }
        Ok(())
    }

    fn on_record(&mut self, record: &Record, _view: &dyn TrainingView) -> Result<()> {
        self.val_accuracy = record.val_accuracy;
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
        let Some(info) = self.info.clone() else {
            return Ok(());
        };
        if info.by_epochs && self.log_now {
            let epochs = info.total_steps / info.steps_per_epoch.max(1);
            let mut line = format!(
                "Epoch {}/{epochs}: cost {:.4}, accuracy {:.4}",
                record.epoch.unwrap_or(0),
                record.cost,
                record.train_accuracy
            );
            if let (Some(c), Some(a)) = (record.val_cost, record.val_accuracy) {
                line.push_str(&format!(", val cost {c:.4}, val accuracy {a:.4}"));
            }
            self.say(line);
        }
        Ok(())
    }

    fn on_end(&mut self, _history: &History) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(out) = &mut self.lines {
            let _ = out.flush();
        }
    }
}
