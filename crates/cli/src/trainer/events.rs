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
    last_val: Option<f64>,
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
            let style = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Events {
            out,
            file: None,
            bar,
            last_val: None,
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
            Event::Val { val_loss, .. } => self.last_val = Some(*val_loss),
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
            let val = self
                .last_val
                .map_or(String::new(), |v| format!(" val {v:.4}"));
            bar.set_message(format!("loss {avg_loss:.4}{val}"));
        }
    }

    /// Writes an event to the run's log only (stdout gets it elsewhere, e.g. errors).
    pub fn record_only(&mut self, e: &Event) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{}", e.to_line()).and_then(|_| f.flush());
        }
    }

    /// Like `emit` for a batch, with lr and throughput on the bar.
    pub fn progress_detail(&self, lr: f64, tokens_per_s: f64) {
        let (batch, loss) = self.last_batch;
        if self.plain_every > 0 && (batch % self.plain_every == 0 || batch == self.total) {
            let val = self
                .last_val
                .map_or(String::new(), |v| format!(" | val {v:.4}"));
            self.out.log(format!(
                "step {batch}/{} | loss {loss:.4}{val} | lr {lr:.2e} | {tokens_per_s:.0} tok/s",
                self.total
            ));
        }
        if let Some(bar) = &self.bar {
            let msg = bar.message();
            let base = msg.split(" | ").next().unwrap_or("").to_string();
            bar.set_message(format!("{base} | lr {lr:.2e} | {tokens_per_s:.0} tok/s"));
        }
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
