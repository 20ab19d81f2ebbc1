//! The NDJSON protocol of DESIGN.md: with `--json`, every long command writes one of these
//! objects per line on stdout. Field names are part of the contract; add, never rename.

use serde::{Deserialize, Serialize};
use std::io::Write;

/// Version of this protocol, reported in `init`.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Init {
        protocol: u32,
        params: u64,
        trainable_params: u64,
        layers: u32,
        dim: u32,
        hidden: u32,
        heads: u32,
        seq: u32,
        vocab: u32,
        mode: String,
        device: String,
        threads: u32,
        timestamp: f64,
        /// The matrix products' operand precision (`train --precision`): f32 or bf16.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<String>,
    },
    Phase {
        phase: String,
    },
    Step {
        step: u64,
        total: u64,
        loss: f64,
        lr: f64,
        ms: f64,
        tokens_per_s: f64,
        gflops: f64,
    },
    Batch {
        batch: u64,
        step: u64,
        avg_loss: f64,
        best_loss: f64,
        train_ms: f64,
        /// Model FLOPs of this step per second over the engine's measured GEMM peak.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfu: Option<f64>,
        /// The training process's peak resident memory so far (Linux only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_rss_bytes: Option<u64>,
    },
    Val {
        step: u64,
        val_loss: f64,
        val_batches: u64,
    },
    Checkpoint {
        path: String,
        step: u64,
        loss: f64,
    },
    Restart {
        step: u64,
        reason: String,
    },
    Done {
        total_steps: u64,
        final_loss: f64,
        total_time_s: f64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
    },
    Error {
        message: String,
        code: String,
    },
    Token {
        token_id: u32,
        text: String,
        /// `generate --logprobs`: the token's log-probability under the model's own
        /// distribution (raw logits, before temperature, penalties and filters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<f64>,
        /// `generate --logprobs N`: the N most likely tokens at this step, most likely first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        top_logprobs: Vec<TopLogprob>,
    },
    GenerateDone {
        tokens: u64,
        total_ms: f64,
        /// Why generation ended: eos, max_tokens, context_full, stop (a stop string) or
        /// interrupted (Ctrl-C).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    Info {
        key: String,
        value: serde_json::Value,
    },
    IngestFile {
        file: String,
        tokens: u64,
    },
    IngestDone {
        new_files: u64,
        skipped: u64,
        total_tokens: u64,
        shards: u64,
        manifest: String,
    },
}

/// One alternative of a `token` event's `top_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token_id: u32,
    /// The token's own text (lossy where it is part of a multi-byte character).
    pub text: String,
    pub logprob: f64,
}

impl Event {
    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"message\":\"{e}\",\"code\":\"serialize\"}}")
        })
    }

    /// Writes the event as one line and flushes, so a reader sees it at once.
    pub fn emit(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.to_line())?;
        out.flush()
    }
}

/// Seconds since the Unix epoch, for `init.timestamp`.
pub fn unix_timestamp() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_event_has_contract_fields() {
        let e = Event::Step {
            step: 3,
            total: 10,
            loss: 2.5,
            lr: 1e-3,
            ms: 12.0,
            tokens_per_s: 100.0,
            gflops: 1.0,
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_line()).unwrap();
        for key in ["type", "step", "total", "loss", "lr", "ms"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["type"], "step");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }

    #[test]
    fn done_omits_interrupted_when_false() {
        let e = Event::Done {
            total_steps: 1,
            final_loss: 1.0,
            total_time_s: 1.0,
            interrupted: false,
        };
        assert!(!e.to_line().contains("interrupted"));
    }
}
