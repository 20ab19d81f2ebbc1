//! Turning a run's NDJSON events into `events` rows: the x coordinates (optimizer step,
//! tokens, training time), the metric columns the charts read, and the run's summary card.
//! The same code journals a live child, catches up from `events.ndjson` and reindexes.

use rusqlite::{params, Transaction};
use serde_json::{json, Map, Value};

/// Bits of `events.bad`: which metric of the event was not a finite number.
pub const BAD_LOSS: i64 = 1;
pub const BAD_VAL: i64 = 2;
pub const BAD_LR: i64 = 4;
pub const BAD_TPS: i64 = 8;

/// Where one run's stream stands; kept in the run summary so a resumed journal continues.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub summary: Map<String, Value>,
    /// Optimizer step of the last `batch` event.
    last_batch: u64,
    tokens_per_step: Option<f64>,
    /// Sum of the `ms` of the step events, in seconds: the time axis (wall gaps left out).
    elapsed_s: f64,
}

pub struct Row {
    pub kind: String,
    pub x_step: Option<f64>,
    pub x_tokens: Option<f64>,
    pub x_time: Option<f64>,
    pub loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub lr: Option<f64>,
    pub tps: Option<f64>,
    pub bad: i64,
}

/// A metric field: Some(value) when finite; the bit is set when present but not finite
/// (serde writes NaN and infinity as `null`).
fn metric(e: &Value, key: &str, bit: i64, bad: &mut i64) -> Option<f64> {
    match e.get(key) {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Some(v),
            _ => {
                *bad |= bit;
                None
            }
        },
        Some(_) => {
            *bad |= bit;
            None
        }
        None => None,
    }
}

fn u(e: &Value, key: &str) -> Option<u64> {
    e.get(key).and_then(Value::as_u64)
}

impl Journal {
    pub fn from_summary(summary: &Value) -> Journal {
        let summary = summary.as_object().cloned().unwrap_or_default();
        Journal {
            last_batch: summary.get("step").and_then(Value::as_u64).unwrap_or(0),
            tokens_per_step: summary.get("tokens_per_step").and_then(Value::as_f64),
            elapsed_s: summary
                .get("train_time_s")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            summary,
        }
    }

    fn set(&mut self, key: &str, v: Value) {
        self.summary.insert(key.to_string(), v);
    }

    fn best(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v {
            let old = self.summary.get(key).and_then(Value::as_f64);
            if old.is_none_or(|o| v < o) {
                self.set(key, json!(v));
            }
        }
    }

    fn xs(&self, step: f64) -> (Option<f64>, Option<f64>, Option<f64>) {
        (
            Some(step),
            self.tokens_per_step.map(|t| t * step),
            Some(self.elapsed_s),
        )
    }

    /// The row for one event, updating the summary on the way.
    pub fn row(&mut self, e: &Value) -> Row {
        let kind = e
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let mut bad = 0;
        let mut row = Row {
            kind: kind.clone(),
            x_step: None,
            x_tokens: None,
            x_time: None,
            loss: None,
            val_loss: None,
            lr: None,
            tps: None,
            bad: 0,
        };
        let at = |j: &Journal, step: f64, row: &mut Row| {
            (row.x_step, row.x_tokens, row.x_time) = j.xs(step);
        };
        match kind.as_str() {
            "init" => {
                for k in ["params", "trainable_params", "mode", "device", "precision"] {
                    if let Some(v) = e.get(k) {
                        self.set(k, v.clone());
                    }
                }
            }
            "phase" => self.set("phase", e.get("phase").cloned().unwrap_or(Value::Null)),
            "info" if e.get("key").and_then(Value::as_str) == Some("plan") => {
                let plan = e.get("value").cloned().unwrap_or(Value::Null);
                let tps = plan.get("tokens_per_step").and_then(Value::as_f64);
                let total = plan.get("total_tokens").and_then(Value::as_f64);
                self.tokens_per_step = tps.filter(|t| *t > 0.0);
                if let (Some(t), Some(total)) = (self.tokens_per_step, total) {
                    self.set("total", json!((total / t).round() as u64));
                }
                if let Some(t) = self.tokens_per_step {
                    self.set("tokens_per_step", json!(t));
                }
                self.set("plan", plan);
            }
            "step" => {
                self.elapsed_s += e.get("ms").and_then(Value::as_f64).unwrap_or(0.0) / 1000.0;
                row.lr = metric(e, "lr", BAD_LR, &mut bad);
                row.tps = metric(e, "tokens_per_s", BAD_TPS, &mut bad);
                at(self, (self.last_batch + 1) as f64, &mut row);
                if let Some(t) = row.tps {
                    self.set("tokens_per_s", json!(t));
                }
                if let Some(g) = e.get("gflops") {
                    self.set("gflops", g.clone());
                }
                self.set("train_time_s", json!(self.elapsed_s));
            }
            "batch" => {
                let b = u(e, "batch").unwrap_or(self.last_batch + 1);
                self.last_batch = b;
                row.loss = metric(e, "avg_loss", BAD_LOSS, &mut bad);
                at(self, b as f64, &mut row);
                self.set("step", json!(b));
                self.set("loss", row.loss.map_or(Value::Null, |v| json!(v)));
                self.best("best_loss", row.loss);
                if let Some(m) = e.get("mfu").and_then(Value::as_f64) {
                    self.set("mfu", json!(m));
                }
                if let Some(r) = u(e, "peak_rss_bytes") {
                    // Across restarts: the largest any of the run's processes reached.
                    let before = self
                        .summary
                        .get("peak_rss")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    self.set("peak_rss", json!(r.max(before)));
                }
            }
            "val" => {
                row.val_loss = metric(e, "val_loss", BAD_VAL, &mut bad);
                at(
                    self,
                    u(e, "step").unwrap_or(self.last_batch) as f64,
                    &mut row,
                );
                self.set("val_loss", row.val_loss.map_or(Value::Null, |v| json!(v)));
                self.best("best_val_loss", row.val_loss);
            }
            "checkpoint" => {
                let s = u(e, "step").unwrap_or(self.last_batch);
                at(self, s as f64, &mut row);
                self.set("last_checkpoint", json!({"path": e.get("path"), "step": s}));
            }
            "restart" => {
                let s = u(e, "step").unwrap_or(self.last_batch);
                // A resumed child starts again after its checkpoint.
                if e.get("source").and_then(Value::as_str) != Some("studio") {
                    self.last_batch = s;
                }
                at(self, s as f64, &mut row);
            }
            "done" => {
                at(self, self.last_batch as f64, &mut row);
                for (from, to) in [("final_loss", "final_loss"), ("total_time_s", "elapsed_s")] {
                    if let Some(v) = e.get(from) {
                        self.set(to, v.clone());
                    }
                }
                self.set(
                    "interrupted",
                    json!(e.get("interrupted") == Some(&json!(true))),
                );
            }
            "error" => {
                self.set(
                    "error",
                    json!({"message": e.get("message"), "code": e.get("code")}),
                );
            }
            _ => {}
        }
        row.bad = bad;
        row
    }
}

/// Inserts one event (its exact text in `data`); returns the row id. `origin` 1 marks events
/// the studio itself wrote (its `restart` after a crash), which `events.ndjson` does not hold.
pub fn insert(
    tx: &Transaction,
    run_id: i64,
    row: &Row,
    origin: i64,
    ts: f64,
    data: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO events(run_id, type, origin, x_step, x_tokens, x_time, loss, val_loss, lr,
                            tps, bad, ts, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        run_id,
        row.kind,
        origin,
        row.x_step,
        row.x_tokens,
        row.x_time,
        row.loss,
        row.val_loss,
        row.lr,
        row.tps,
        row.bad,
        ts,
        data
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Journals a batch of lines of one run in one transaction and saves the summary.
/// Lines that are not JSON objects are stored as `{"type":"raw","text":...}`.
pub fn journal_lines(
    tx: &Transaction,
    run_id: i64,
    journal: &mut Journal,
    lines: &[String],
    origin: i64,
) -> rusqlite::Result<Vec<(i64, Value)>> {
    let ts = crate::util::now();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let (value, text) = match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => (v, line.clone()),
            _ => {
                let v = json!({"type": "raw", "text": line});
                let t = v.to_string();
                (v, t)
            }
        };
        let row = journal.row(&value);
        let id = insert(tx, run_id, &row, origin, ts, &text)?;
        out.push((id, value));
    }
    tx.execute(
        "UPDATE runs SET summary = ?2 WHERE id = ?1",
        params![run_id, Value::Object(journal.summary.clone()).to_string()],
    )?;
    Ok(out)
}
