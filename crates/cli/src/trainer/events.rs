//! Where training events go: every event to the run's `events.ndjson`, to stdout with
//! `--json`, and (on a terminal without `--json`) to the progress bar and stderr.

use crate::output::Output;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::Event;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub struct Events<'a> {
    out: &'a Output,
    file: Option<BufWriter<File>>,
    bar: Option<ProgressBar>,
    /// The latest evaluation: (optimizer step, validation loss).
    last_val: Option<(u64, f64)>,
    /// ETA from the steps done by this process only (a resumed run's earlier steps took
    /// their time in another process).
    eta: Eta,
    /// Without a bar (stderr not a terminal) and without --json: a plain progress line
    /// every this many optimizer steps.
    plain_every: u64,
    total: u64,
    last_batch: (u64, f64),
}

impl<'a> Events<'a> {
    pub fn new(out: &'a Output, show_bar: bool) -> Events<'a> {
        let bar = (!out.json && show_bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let template = if crate::no_color() {
                "{bar:30} {pos}/{len} {msg}"
            } else {
                "{bar:30.cyan/blue} {pos}/{len} {msg}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Events {
            out,
            file: None,
            bar,
            last_val: None,
            eta: Eta::default(),
            plain_every: 0,
            total: 0,
            last_batch: (0, f64::NAN),
        }
    }

    /// Appends every later event to `path` (created if needed).
    pub fn open_log(&mut self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening event log {}", path.display()))?;
        self.file = Some(BufWriter::new(f));
        Ok(())
    }

    pub fn set_total(&mut self, total: u64, done: u64) {
        self.total = total;
        self.eta = Eta::starting(done);
        if self.bar.is_none() && !self.out.json {
            self.plain_every = (total / 20).max(1);
        }
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }

    /// Records an event everywhere it belongs.
    pub fn emit(&mut self, e: &Event) {
        if let Some(f) = &mut self.file {
            // Flushed per line so a crash loses nothing that was reported.
            let _ = writeln!(f, "{}", e.to_line()).and_then(|_| f.flush());
        }
        self.out.event(e);
        match e {
            Event::Batch {
                batch, avg_loss, ..
            } => self.last_batch = (*batch, *avg_loss),
            Event::Val { step, val_loss, .. } => self.last_val = Some((*step, *val_loss)),
            _ => {}
        }
        if let (
            Some(bar),
            Event::Batch {
                batch, avg_loss, ..
            },
        ) = (&self.bar, e)
        {
            bar.set_position(*batch);
            bar.set_message(format!("loss {avg_loss:.4}{}", val_column(self.last_val)));
        }
    }

    /// Writes an event to the run's log only (stdout gets it elsewhere, e.g. errors).
    pub fn record_only(&mut self, e: &Event) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{}", e.to_line()).and_then(|_| f.flush());
        }
    }

    /// Like `emit` for a batch, with lr, throughput, elapsed time and ETA on the bar.
    pub fn progress_detail(&self, lr: f64, tokens_per_s: f64) {
        let (batch, loss) = self.last_batch;
        let eta = self
            .eta
            .remaining_s(batch, self.total)
            .map_or("?".to_string(), clock);
        let timing = format!("{} < eta {eta}", clock(self.eta.elapsed_s()));
        if self.plain_every > 0 && (batch % self.plain_every == 0 || batch == self.total) {
            self.out.log(format!(
                "step {batch}/{} | loss {loss:.4}{} | lr {lr:.2e} | {tokens_per_s:.0} tok/s | {timing}",
                self.total,
                val_column(self.last_val).replace(" val", " | val"),
            ));
        }
        if let Some(bar) = &self.bar {
            let msg = bar.message();
            let base = msg.split(" | ").next().unwrap_or("").to_string();
            bar.set_message(format!(
                "{base} | lr {lr:.2e} | {tokens_per_s:.0} tok/s | {timing}"
            ));
        }
    }

    /// The latest evaluation (step, loss), if any.
    pub fn last_val(&self) -> Option<(u64, f64)> {
        self.last_val
    }

    /// A human line (stderr), above the bar when there is one.
    pub fn log(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(msg.as_ref()),
            _ => self.out.log(msg),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// " val 2.1234 @120": the validation loss with the step it was measured at.
fn val_column(v: Option<(u64, f64)>) -> String {
    v.map_or(String::new(), |(step, loss)| {
        format!(" val {loss:.4} @{step}")
    })
}

/// h:mm:ss (or m:ss).
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Time left from the pace of the steps this process has done.
#[derive(Debug, Clone)]
pub struct Eta {
    started: std::time::Instant,
    first_step: u64,
}

impl Default for Eta {
    fn default() -> Eta {
        Eta::starting(0)
    }
}

impl Eta {
    /// Counting from now, with `done` steps already behind (a resume).
    pub fn starting(done: u64) -> Eta {
        Eta {
            started: std::time::Instant::now(),
            first_step: done,
        }
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Seconds left at step `now` of `total`; None before this process finished a step.
    pub fn remaining_s(&self, now: u64, total: u64) -> Option<f64> {
        eta_from(
            self.elapsed_s(),
            now.saturating_sub(self.first_step),
            total.saturating_sub(now),
        )
    }
}

/// `left` more steps at the pace of `done` steps in `elapsed` seconds.
pub fn eta_from(elapsed: f64, done: u64, left: u64) -> Option<f64> {
    (done > 0).then(|| elapsed / done as f64 * left as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_counts_only_this_process_steps() {
        // Resumed at step 900 of 1000: 10 steps took 5 s here, so 90 steps left take 45 s,
        // not the 0.5 s a rate over all 910 steps would claim.
        assert_eq!(eta_from(5.0, 10, 90), Some(45.0));
        assert_eq!(eta_from(5.0, 0, 90), None);
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(val_column(Some((120, 2.5))), " val 2.5000 @120");
    }
}
