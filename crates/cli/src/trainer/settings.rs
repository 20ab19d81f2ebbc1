//! Training settings as the user gives them: command-line flags and `--config FILE.toml`
//! share this one struct (every field optional), so a flag overrides the same key of the file.
//! `config.rs` turns the merged settings into a fully resolved, validated `TrainConfig`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of these settings (keys are the flag names with `_`); flags win.
    #[arg(long, help_heading = "Run", value_name = "FILE.toml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Continue the run in RUN_DIR (or `--out`) from its latest checkpoint.
    #[arg(long, help_heading = "Run", value_name = "RUN_DIR", num_args = 0..=1)]
    #[serde(skip)]
    pub resume: Option<Option<PathBuf>>,

    /// Model folder (Hugging Face layout), GGUF or llama2.c file to start from.
    #[arg(long, help_heading = "Model", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Train from scratch with a preset shape: tiny, stories260k, stories15m, stories110m,
    /// smollm2-135m.
    #[arg(long, help_heading = "Model", value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(engine::ModelConfig::PRESETS))]
    pub init: Option<String>,
    /// Tokenizer (tokenizer.json, llama2.c tokenizer.bin, or a model folder) when the model
    /// has none or when training from scratch on text.
    #[arg(long, help_heading = "Model", value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Training data: an ingested folder (manifest.json), a raw token file, or .txt/.jsonl.
    #[arg(long, help_heading = "Data", value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Element type of raw token files: u16 (llama2.c .bin) or u32.
    #[arg(long, help_heading = "Data", value_parser = ["u16", "u32"])]
    pub token_dtype: Option<String>,
    /// Validation data (same kinds as --data).
    #[arg(long, help_heading = "Data", value_name = "PATH")]
    pub val_data: Option<PathBuf>,
    /// Train on an ingested dataset whose recorded tokenizer differs from the model's.
    #[arg(long, help_heading = "Data")]
    #[serde(skip)]
    pub allow_tokenizer_mismatch: bool,
    /// Hold out this fraction of the end of the training tokens for validation.
    #[arg(long, help_heading = "Data", value_name = "F")]
    pub val_split: Option<f64>,

    /// Optimizer steps.
    #[arg(long, help_heading = "Batch and steps")]
    pub steps: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long, help_heading = "Batch and steps")]
    pub batch_size: Option<usize>,
    /// Tokens per sequence.
    #[arg(long, help_heading = "Batch and steps")]
    pub seq_len: Option<usize>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, help_heading = "Batch and steps")]
    pub accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long, help_heading = "Optimizer")]
    pub lr: Option<f64>,
    /// Final learning rate of the decay.
    #[arg(long, help_heading = "Schedule")]
    pub lr_min: Option<f64>,
    /// Linear warmup steps.
    #[arg(long, help_heading = "Schedule")]
    pub warmup: Option<u64>,
    /// Decay after warmup: cosine, linear or constant.
    #[arg(long, help_heading = "Schedule", value_parser = ["cosine", "linear", "constant"])]
    pub schedule: Option<String>,
    /// AdamW weight decay (2-D weights only).
    #[arg(long, help_heading = "Optimizer")]
    pub weight_decay: Option<f64>,
    /// AdamW first-moment decay.
    #[arg(long, help_heading = "Optimizer")]
    pub beta1: Option<f64>,
    /// AdamW second-moment decay.
    #[arg(long, help_heading = "Optimizer")]
    pub beta2: Option<f64>,
    /// AdamW epsilon.
    #[arg(long, help_heading = "Optimizer")]
    pub eps: Option<f64>,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    #[arg(long, help_heading = "Optimizer")]
    pub grad_clip: Option<f64>,
    /// Seed of the initialisation, data order and dropout.
    #[arg(long, help_heading = "Run")]
    pub seed: Option<u64>,
    /// Worker threads (0 = one per core).
    #[arg(long, help_heading = "Run")]
    pub threads: Option<usize>,
    /// Window order: shuffle or sequential.
    #[arg(long, help_heading = "Data", value_parser = ["shuffle", "sequential"])]
    pub data_order: Option<String>,
    /// Evaluate every N optimizer steps (0 = only at the end).
    #[arg(long, help_heading = "Validation and checkpoints")]
    pub val_every: Option<u64>,
    /// Batches per evaluation.
    #[arg(long, help_heading = "Validation and checkpoints")]
    pub val_batches: Option<u64>,
    /// Evaluate exactly this many windows instead (0 = val_batches * batch_size).
    #[arg(long, help_heading = "Validation and checkpoints")]
    pub val_windows: Option<u64>,
    /// Checkpoint every N optimizer steps (0 = only at the end or on interruption).
    #[arg(long, help_heading = "Validation and checkpoints")]
    pub ckpt_every: Option<u64>,
    /// Keep only the newest N checkpoints (0 = keep all).
    #[arg(long, help_heading = "Validation and checkpoints", value_name = "N")]
    pub keep_checkpoints: Option<usize>,
    /// Stop after N evaluations without a new best validation loss (0 = never).
    #[arg(long, help_heading = "Validation and checkpoints", value_name = "N")]
    pub early_stop_patience: Option<u64>,
    /// Stop with an error after N non-finite steps in a row.
    #[arg(long, help_heading = "Optimizer", value_name = "N")]
    pub max_bad_steps: Option<u64>,
    /// Run folder.
    #[arg(long, help_heading = "Run", value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Train a LoRA adapter of this rank instead of the whole model (0 = full training).
    #[arg(long, help_heading = "LoRA")]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator: the update is scaled by alpha / rank.
    #[arg(long, help_heading = "LoRA")]
    pub lora_alpha: Option<f64>,
    /// Comma-separated projections to adapt: q,k,v,o,gate,up,down.
    #[arg(long, help_heading = "LoRA")]
    pub lora_targets: Option<String>,
    /// Dropout on the LoRA branch input (0 = off).
    #[arg(long, help_heading = "LoRA")]
    pub lora_dropout: Option<f64>,
    /// How a LoRA run holds a quantized GGUF base: keep (its block format, dequantized tile
    /// by tile into the products: QLoRA), bf16, or f32 (expanded at load).
    #[arg(long, help_heading = "LoRA", value_parser = ["keep", "bf16", "f32"])]
    pub base_dtype: Option<String>,
    /// Operand precision of the matrix products: f32, bf16 (BF16 operands with f32 sums on
    /// AVX-512 BF16; f32 master weights), or auto (bf16 where the CPU has it).
    #[arg(long, help_heading = "Run", value_parser = crate::precision::CHOICES)]
    pub precision: Option<String>,
    /// Hide the progress bar even on a terminal.
    #[arg(long, help_heading = "Run")]
    #[serde(skip)]
    pub no_progress: bool,
    /// Resolve everything (model, data, plan, memory, full config), print it and exit
    /// without training or writing anything.
    #[arg(long, help_heading = "Run")]
    #[serde(skip)]
    pub dry_run: bool,
}

/// Copies into `base` every field that `top` sets (flags over a config file).
macro_rules! overlay {
    ($base:ident, $top:ident, $($f:ident),* $(,)?) => {
        $( if $top.$f.is_some() { $base.$f = $top.$f.clone(); } )*
    };
}

impl Settings {
    /// `self` with every field set in `top` replaced by `top`'s value.
    pub fn overlaid(mut self, top: &Settings) -> Settings {
        overlay!(
            self,
            top,
            config,
            resume,
            model,
            init,
            tokenizer,
            data,
            token_dtype,
            val_data,
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
            seed,
            threads,
            data_order,
            val_every,
            val_batches,
            val_windows,
            ckpt_every,
            keep_checkpoints,
            early_stop_patience,
            max_bad_steps,
            out,
            lora_rank,
            lora_alpha,
            lora_targets,
            lora_dropout,
            base_dtype,
            precision,
        );
        self.no_progress |= top.no_progress;
        self.dry_run |= top.dry_run;
        self.allow_tokenizer_mismatch |= top.allow_tokenizer_mismatch;
        self
    }

    /// Reads a TOML settings file; unknown keys are errors naming the key.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Settings> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// The default of each train setting as `train --help` and `neuralforge options train` show
/// it. `config::TrainConfig::resolve` applies them; a test keeps the two in step.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("token_dtype", "u16"),
    ("val_split", "0"),
    ("steps", "1000"),
    ("batch_size", "8"),
    ("seq_len", "256"),
    ("accum", "1"),
    ("lr", "0.0003 (0.0002 with LoRA)"),
    ("lr_min", "lr / 10"),
    ("warmup", "steps / 20, at most 100"),
    ("schedule", "cosine"),
    ("weight_decay", "0.1 (0 with LoRA)"),
    ("beta1", "0.9"),
    ("beta2", "0.95"),
    ("eps", "1e-8"),
    ("grad_clip", "1"),
    ("seed", "1337"),
    ("threads", "0"),
    ("data_order", "shuffle"),
    ("val_every", "100"),
    ("val_batches", "10"),
    ("val_windows", "0"),
    ("ckpt_every", "100"),
    ("keep_checkpoints", "3"),
    ("early_stop_patience", "0"),
    ("max_bad_steps", "5"),
    ("out", "runs/run-<UTC time>"),
    ("lora_rank", "0"),
    ("lora_alpha", "2 x lora-rank"),
    ("lora_targets", "q,v"),
    ("lora_dropout", "0"),
    ("base_dtype", "keep"),
    ("precision", "f32"),
];

/// The shown default of setting `name` (its field name), if it has one.
pub fn default_of(name: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::config::TrainConfig;

    /// Every plain number or word in DEFAULTS is what `resolve` fills in.
    #[test]
    fn shown_defaults_are_the_resolved_ones() {
        let base = Settings {
            init: Some("tiny".into()),
            data: Some("x.bin".into()),
            ..Settings::default()
        };
        let resolved = serde_json::to_value(TrainConfig::resolve(&base).unwrap()).unwrap();
        for (name, shown) in DEFAULTS {
            let Some(v) = resolved.get(*name) else {
                panic!("{name} is not a config key")
            };
            let plain = shown.split(" (").next().unwrap_or(shown);
            let as_text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match plain.parse::<f64>() {
                Ok(n) => assert_eq!(v.as_f64(), Some(n), "{name}: shown {shown}, resolved {v}"),
                Err(_) if !plain.contains(' ') && !plain.contains('<') => {
                    assert_eq!(as_text, plain, "{name}")
                }
                Err(_) => {} // a rule in words ("lr / 10"), checked by config's own tests
            }
        }
    }
}
