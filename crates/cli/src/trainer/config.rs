//! The fully resolved training configuration: every default filled in and every value checked.
//! It is written to the run folder as `config.toml` and into each checkpoint.

use super::settings::Settings;
use crate::output::Coded;
use data::windows::DataOrder;
use engine::lora::{LoraConfig, LoraTarget};
use engine::optim::ScheduleKind;
use engine::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Exit status of invalid settings.
pub const EXIT_USAGE: i32 = 2;
/// Exit status when an output already exists and `--force` (or `--resume`) was not given.
pub const EXIT_EXISTS: i32 = 7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    pub data: PathBuf,
    pub token_dtype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    pub val_split: f64,
    pub steps: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    pub accum: usize,
    pub lr: f64,
    pub lr_min: f64,
    pub warmup: u64,
    pub schedule: String,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub grad_clip: f64,
    pub seed: u64,
    pub threads: usize,
    pub data_order: String,
    pub val_every: u64,
    pub val_batches: u64,
    pub val_windows: u64,
    pub ckpt_every: u64,
    pub keep_checkpoints: usize,
    pub early_stop_patience: u64,
    pub max_bad_steps: u64,
    pub out: PathBuf,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_targets: String,
    pub lora_dropout: f64,
    /// How a LoRA run holds a quantized base: keep, bf16 or f32 (configs saved before the
    /// option existed read as keep).
    #[serde(default = "keep")]
    pub base_dtype: String,
    /// `--precision`: auto, f32 or bf16 (configs saved before the option read as f32).
    #[serde(default = "f32_precision")]
    pub precision: String,
    /// `--allow-tokenizer-mismatch`, given anew each time (never saved).
    #[serde(skip)]
    pub allow_tokenizer_mismatch: bool,
}

fn keep() -> String {
    "keep".into()
}

fn f32_precision() -> String {
    "f32".into()
}

/// The values of `--base-dtype`.
pub const BASE_DTYPES: [&str; 3] = ["keep", "bf16", "f32"];

fn bad(flag: &str, value: impl std::fmt::Display, rule: &str) -> anyhow::Error {
    Coded::new(
        "invalid_argument",
        EXIT_USAGE,
        format!("--{flag} is {value}, must be {rule}"),
    )
    .into()
}

fn finite_in(flag: &str, v: f64, lo: f64, hi: f64, rule: &str) -> anyhow::Result<f64> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(bad(flag, v, rule))
    }
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    v: T,
    lo: T,
) -> anyhow::Result<T> {
    if v >= lo {
        Ok(v)
    } else {
        Err(bad(flag, v, &format!("at least {lo}")))
    }
}

/// Parses a comma-separated LoRA target list; an unknown name lists the valid ones.
pub fn parse_lora_targets(s: &str) -> anyhow::Result<Vec<LoraTarget>> {
    let valid = LoraTarget::ALL.map(|t| t.short()).join(", ");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let t: LoraTarget = part.parse().map_err(|_| {
            bad(
                "lora-targets",
                format!("{part:?}"),
                &format!("a comma-separated list of: {valid}"),
            )
        })?;
        out.push(t);
    }
    if out.is_empty() {
        return Err(bad(
            "lora-targets",
            format!("{s:?}"),
            &format!("a non-empty list of: {valid}"),
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // UTC civil date from Unix seconds (Howard Hinnant's days-from-civil inverse).
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from(format!(
        "runs/run-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    ))
}

impl TrainConfig {
    /// Fills defaults and validates every value. `max_seq` (when the model is known) bounds
    /// `seq_len`.
    pub fn resolve(s: &Settings) -> anyhow::Result<TrainConfig> {
        let model = s.model.clone();
        let init = s.init.clone();
        match (&model, &init) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "init",
                    "given together with --model",
                    "left out when --model is given (one or the other)",
                ))
            }
            (None, None) => {
                return Err(Coded::new(
                    "invalid_argument",
                    EXIT_USAGE,
                    "give --model PATH (fine-tune) or --init PRESET (from scratch); \
                     training never starts from random weights silently",
                )
                .into())
            }
            _ => {}
        }
        if let Some(p) = &init {
            if ModelConfig::preset(p).is_none() {
                return Err(bad(
                    "init",
                    format!("{p:?}"),
                    &format!("one of: {}", ModelConfig::PRESETS.join(", ")),
                ));
            }
        }
        let data = s.data.clone().ok_or_else(|| {
            Coded::new(
                "invalid_argument",
                EXIT_USAGE,
                "--data is required (an ingested folder, a token file, or .txt/.jsonl)",
            )
        })?;
        let token_dtype = s.token_dtype.clone().unwrap_or_else(|| "u16".into());
        if !["u16", "u32"].contains(&token_dtype.as_str()) {
            return Err(bad(
                "token-dtype",
                format!("{token_dtype:?}"),
                "one of: u16, u32",
            ));
        }
        let val_split = finite_in(
            "val-split",
            s.val_split.unwrap_or(0.0),
            0.0,
            0.5,
            "in [0, 0.5]",
        )?;
        if s.val_data.is_some() && val_split > 0.0 {
            return Err(bad(
                "val-split",
                val_split,
                "0 when --val-data is given (one or the other)",
            ));
        }
        let steps = at_least("steps", s.steps.unwrap_or(1000), 1)?;
        let batch_size = at_least("batch-size", s.batch_size.unwrap_or(8), 1)?;
        let seq_len = at_least("seq-len", s.seq_len.unwrap_or(256), 2)?;
        let accum = at_least("accum", s.accum.unwrap_or(1), 1)?;
        if batch_size > 1 << 16 || seq_len > 1 << 20 || accum > 1 << 16 {
            return Err(bad(
                "batch-size",
                format!("{batch_size} (seq-len {seq_len}, accum {accum})"),
                "at most 65536 (seq-len at most 2^20, accum at most 65536)",
            ));
        }
        let lora_rank = s.lora_rank.unwrap_or(0);
        let lora = lora_rank > 0;
        let lr = finite_in(
            "lr",
            s.lr.unwrap_or(if lora { 2e-4 } else { 3e-4 }),
            f64::MIN_POSITIVE,
            10.0,
            "a finite number in (0, 10]",
        )?;
        let lr_min = finite_in(
            "lr-min",
            s.lr_min.unwrap_or(lr / 10.0),
            0.0,
            lr,
            "in [0, --lr]",
        )?;
        let warmup = s.warmup.unwrap_or((steps / 20).min(100));
        if warmup > steps {
            return Err(bad("warmup", warmup, &format!("at most --steps ({steps})")));
        }
        let schedule = s.schedule.clone().unwrap_or_else(|| "cosine".into());
        schedule.parse::<ScheduleKind>().map_err(|_| {
            bad(
                "schedule",
                format!("{schedule:?}"),
                "one of: cosine, linear, constant",
            )
        })?;
        let weight_decay = finite_in(
            "weight-decay",
            s.weight_decay.unwrap_or(if lora { 0.0 } else { 0.1 }),
            0.0,
            10.0,
            "a finite number in [0, 10]",
        )?;
        let beta1 = finite_in("beta1", s.beta1.unwrap_or(0.9), 0.0, 0.999_999, "in [0, 1)")?;
        let beta2 = finite_in(
            "beta2",
            s.beta2.unwrap_or(0.95),
            0.0,
            0.999_999_9,
            "in [0, 1)",
        )?;
        let eps = finite_in("eps", s.eps.unwrap_or(1e-8), 1e-30, 1.0, "in (0, 1]")?;
        let grad_clip = finite_in(
            "grad-clip",
            s.grad_clip.unwrap_or(1.0),
            0.0,
            1e9,
            "a finite number >= 0 (0 = no clipping)",
        )?;
        let threads = s.threads.unwrap_or(0);
        if threads > 4096 {
            return Err(bad("threads", threads, "at most 4096 (0 = one per core)"));
        }
        let data_order = s.data_order.clone().unwrap_or_else(|| "shuffle".into());
        if DataOrder::parse(&data_order).is_none() {
            return Err(bad(
                "data-order",
                format!("{data_order:?}"),
                &format!("one of: {}", DataOrder::NAMES.join(", ")),
            ));
        }
        let val_every = s.val_every.unwrap_or(100);
        let val_batches = at_least("val-batches", s.val_batches.unwrap_or(10), 1)?;
        let val_windows = s.val_windows.unwrap_or(0);
        let lora_alpha = finite_in(
            "lora-alpha",
            s.lora_alpha.unwrap_or(2.0 * lora_rank as f64),
            0.0,
            1e6,
            "a finite number in (0, 1e6]",
        )?;
        if lora && lora_alpha <= 0.0 {
            return Err(bad("lora-alpha", lora_alpha, "above 0"));
        }
        let lora_targets = s.lora_targets.clone().unwrap_or_else(|| "q,v".into());
        let parsed = parse_lora_targets(&lora_targets)?;
        let lora_targets = parsed
            .iter()
            .map(|t| t.short())
            .collect::<Vec<_>>()
            .join(",");
        let lora_dropout = finite_in(
            "lora-dropout",
            s.lora_dropout.unwrap_or(0.0),
            0.0,
            0.99,
            "in [0, 0.99]",
        )?;
        let base_dtype = s.base_dtype.clone().unwrap_or_else(keep);
        if !BASE_DTYPES.contains(&base_dtype.as_str()) {
            return Err(bad(
                "base-dtype",
                format!("{base_dtype:?}"),
                "one of: keep, bf16, f32",
            ));
        }
        let precision = s.precision.clone().unwrap_or_else(f32_precision);
        if !crate::precision::CHOICES.contains(&precision.as_str()) {
            return Err(bad(
                "precision",
                format!("{precision:?}"),
                "one of: auto, f32, bf16",
            ));
        }
        // Input paths are stored absolute so that a resume from another directory finds them.
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        Ok(TrainConfig {
            model: model.as_ref().map(abs),
            init,
            tokenizer: s.tokenizer.as_ref().map(abs),
            data: abs(&data),
            token_dtype,
            val_data: s.val_data.as_ref().map(abs),
            val_split,
            steps,
            batch_size,
            seq_len,
            accum,
            lr,
            lr_min,
            warmup,
            schedule,
            weight_decay,
            beta1,
            beta2,
            eps,
            grad_clip,
            seed: s.seed.unwrap_or(1337),
            threads,
            data_order,
            val_every,
            val_batches,
            val_windows,
            ckpt_every: s.ckpt_every.unwrap_or(100),
            keep_checkpoints: s.keep_checkpoints.unwrap_or(3),
            early_stop_patience: s.early_stop_patience.unwrap_or(0),
            max_bad_steps: at_least("max-bad-steps", s.max_bad_steps.unwrap_or(5), 1)?,
            out: s.out.clone().unwrap_or_else(default_run_dir),
            lora_rank,
            lora_alpha,
            lora_targets,
            lora_dropout,
            base_dtype,
            precision,
            allow_tokenizer_mismatch: false,
        })
    }

    /// The same values as settings (to merge a saved config with new flags on resume).
    pub fn to_settings(&self) -> Settings {
        Settings {
            model: self.model.clone(),
            init: self.init.clone(),
            tokenizer: self.tokenizer.clone(),
            data: Some(self.data.clone()),
            token_dtype: Some(self.token_dtype.clone()),
            val_data: self.val_data.clone(),
            val_split: Some(self.val_split),
            steps: Some(self.steps),
            batch_size: Some(self.batch_size),
            seq_len: Some(self.seq_len),
            accum: Some(self.accum),
            lr: Some(self.lr),
            lr_min: Some(self.lr_min),
            warmup: Some(self.warmup),
            schedule: Some(self.schedule.clone()),
            weight_decay: Some(self.weight_decay),
            beta1: Some(self.beta1),
            beta2: Some(self.beta2),
            eps: Some(self.eps),
            grad_clip: Some(self.grad_clip),
            seed: Some(self.seed),
            threads: Some(self.threads),
            data_order: Some(self.data_order.clone()),
            val_every: Some(self.val_every),
            val_batches: Some(self.val_batches),
            val_windows: Some(self.val_windows),
            ckpt_every: Some(self.ckpt_every),
            keep_checkpoints: Some(self.keep_checkpoints),
            early_stop_patience: Some(self.early_stop_patience),
            max_bad_steps: Some(self.max_bad_steps),
            out: Some(self.out.clone()),
            lora_rank: Some(self.lora_rank),
            lora_alpha: Some(self.lora_alpha),
            lora_targets: Some(self.lora_targets.clone()),
            lora_dropout: Some(self.lora_dropout),
            base_dtype: Some(self.base_dtype.clone()),
            precision: Some(self.precision.clone()),
            ..Settings::default()
        }
    }

    pub fn schedule_kind(&self) -> ScheduleKind {
        // Validated in `resolve`.
        self.schedule.parse().unwrap_or(ScheduleKind::Cosine)
    }

    pub fn order(&self) -> DataOrder {
        DataOrder::parse(&self.data_order).unwrap_or(DataOrder::Shuffle)
    }

    /// The adapter configuration, or None for full training.
    pub fn lora_config(&self) -> anyhow::Result<Option<LoraConfig>> {
        if self.lora_rank == 0 {
            return Ok(None);
        }
        Ok(Some(LoraConfig {
            rank: self.lora_rank,
            alpha: self.lora_alpha,
            targets: parse_lora_targets(&self.lora_targets)?,
            dropout: self.lora_dropout as f32,
        }))
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.batch_size * self.seq_len * self.accum) as u64
    }

    /// Settings that define the trained weights' shape or the data order: a resumed run
    /// must keep them. Returns a description of the first difference.
    pub fn incompatibility(&self, saved: &TrainConfig) -> Option<String> {
        let pairs: [(&str, String, String); 10] = [
            (
                "model",
                format!("{:?}", saved.model),
                format!("{:?}", self.model),
            ),
            (
                "init",
                format!("{:?}", saved.init),
                format!("{:?}", self.init),
            ),
            (
                "seq-len",
                saved.seq_len.to_string(),
                self.seq_len.to_string(),
            ),
            (
                "batch-size",
                saved.batch_size.to_string(),
                self.batch_size.to_string(),
            ),
            ("accum", saved.accum.to_string(), self.accum.to_string()),
            (
                "data-order",
                saved.data_order.clone(),
                self.data_order.clone(),
            ),
            (
                "lora-rank",
                saved.lora_rank.to_string(),
                self.lora_rank.to_string(),
            ),
            (
                "lora-targets",
                saved.lora_targets.clone(),
                self.lora_targets.clone(),
            ),
            (
                "lora-alpha",
                saved.lora_alpha.to_string(),
                self.lora_alpha.to_string(),
            ),
            // The base's storage changes the numbers an exact resume must reproduce.
            (
                "base-dtype",
                saved.base_dtype.clone(),
                self.base_dtype.clone(),
            ),
        ];
        pairs
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(k, a, b)| format!("--{k} is {b} but the checkpoint was trained with {a}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings {
            init: Some("tiny".into()),
            data: Some("x.bin".into()),
            ..Settings::default()
        }
    }

    fn err(s: Settings) -> String {
        format!("{:#}", TrainConfig::resolve(&s).unwrap_err())
    }

    #[test]
    fn defaults_resolve_and_roundtrip_through_toml() {
        let c = TrainConfig::resolve(&base()).unwrap();
        assert_eq!(c.steps, 1000);
        assert_eq!(c.warmup, 50);
        let text = toml::to_string(&c).unwrap();
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let again = TrainConfig::resolve(&c.to_settings()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = err(Settings {
            lr: Some(f64::NAN),
            ..base()
        });
        assert!(e.contains("--lr"), "{e}");
        let e = err(Settings {
            beta2: Some(1.0),
            ..base()
        });
        assert!(e.contains("--beta2"), "{e}");
        let e = err(Settings {
            lora_targets: Some("q,x".into()),
            lora_rank: Some(4),
            ..base()
        });
        assert!(e.contains("\"x\"") && e.contains("gate, up, down"), "{e}");
        let e = err(Settings {
            init: Some("huge".into()),
            ..base()
        });
        assert!(e.contains("stories260k"), "{e}");
        let e = err(Settings {
            data_order: Some("random".into()),
            ..base()
        });
        assert!(e.contains("sequential, shuffle"), "{e}");
        let e = err(Settings {
            init: None,
            ..base()
        });
        assert!(e.contains("--model"), "{e}");
        let e = err(Settings {
            warmup: Some(5),
            steps: Some(4),
            ..base()
        });
        assert!(e.contains("--warmup"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let file: Settings = toml::from_str("steps = 7\nlr = 0.01\n").unwrap();
        let flags = Settings {
            steps: Some(9),
            ..base()
        };
        let c = TrainConfig::resolve(&file.overlaid(&flags)).unwrap();
        assert_eq!((c.steps, c.lr), (9, 0.01));
        assert!(toml::from_str::<Settings>("stpes = 7\n").is_err());
    }
}
