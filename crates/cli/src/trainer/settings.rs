//! Training settings as the user gives them: command-line flags and `--config FILE.toml`
//! share this one struct (every field optional), so a flag overrides the same key of the file.
//! `config.rs` turns the merged settings into a fully resolved, validated `TrainConfig`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of these settings (keys are the flag names with `_`); flags win.
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Continue the run in RUN_DIR (or `--out`) from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
    #[serde(skip)]
    pub resume: Option<Option<PathBuf>>,

    /// Model folder (Hugging Face layout), GGUF or llama2.c file to start from.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Train from scratch with a preset shape: tiny, stories260k, stories15m, stories110m,
    /// smollm2-135m.
    #[arg(long, value_name = "PRESET")]
    pub init: Option<String>,
    /// Tokenizer (tokenizer.json, llama2.c tokenizer.bin, or a model folder) when the model
    /// has none or when training from scratch on text.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Training data: an ingested folder (manifest.json), a raw token file, or .txt/.jsonl.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Element type of raw token files: u16 (llama2.c .bin) or u32.
    #[arg(long, value_name = "u16|u32")]
    pub token_dtype: Option<String>,
    /// Validation data (same kinds as --data).
    #[arg(long, value_name = "PATH")]
    pub val_data: Option<PathBuf>,
    /// Hold out this fraction of the end of the training tokens for validation.
    #[arg(long, value_name = "F")]
    pub val_split: Option<f64>,

    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long)]
    pub accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the decay.
    #[arg(long)]
    pub lr_min: Option<f64>,
    /// Linear warmup steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Decay after warmup: cosine, linear or constant.
    #[arg(long)]
    pub schedule: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub beta1: Option<f64>,
    #[arg(long)]
    pub beta2: Option<f64>,
    #[arg(long)]
    pub eps: Option<f64>,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Window order: shuffle or sequential.
    #[arg(long)]
    pub data_order: Option<String>,
    /// Evaluate every N optimizer steps (0 = only at the end).
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Batches per evaluation.
    #[arg(long)]
    pub val_batches: Option<u64>,
    /// Evaluate exactly this many windows instead (0 = val_batches * batch_size).
    #[arg(long)]
    pub val_windows: Option<u64>,
    /// Checkpoint every N optimizer steps (0 = only at the end or on interruption).
    #[arg(long)]
    pub ckpt_every: Option<u64>,
    /// Keep only the newest N checkpoints (0 = keep all).
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<usize>,
    /// Stop after N evaluations without a new best validation loss (0 = never).
    #[arg(long, value_name = "N")]
    pub early_stop_patience: Option<u64>,
    /// Stop with an error after N non-finite steps in a row.
    #[arg(long, value_name = "N")]
    pub max_bad_steps: Option<u64>,
    /// Run folder (default runs/run-<time>).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Train a LoRA adapter of this rank instead of the whole model (0 = full training).
    #[arg(long)]
    pub lora_rank: Option<usize>,
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Comma-separated projections to adapt: q,k,v,o,gate,up,down.
    #[arg(long)]
    pub lora_targets: Option<String>,
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Hide the progress bar even on a terminal.
    #[arg(long)]
    #[serde(skip)]
    pub no_progress: bool,
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
        );
        self.no_progress |= top.no_progress;
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
