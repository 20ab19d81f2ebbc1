//! What a checkpoint holds besides tensors, and writing/reading whole checkpoints.

use super::config::TrainConfig;
use crate::output::Coded;
use data::windows::OrderState;
use engine::optim::AdamW;
use engine::{ModelConfig, ParamLayout};
use formats::checkpoint::{self, Checkpoint, TensorFile};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Exit status of an unusable checkpoint.
pub const EXIT_CHECKPOINT: i32 = 5;

/// The trainer's part of `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    pub adam_t: u64,
    pub micro_steps: u64,
    pub tokens_seen: u64,
    pub config: TrainConfig,
    pub model: ModelConfig,
    pub order: OrderState,
    /// LoRA dropout generator (xoshiro256** state).
    pub dropout_rng: [u64; 4],
    pub last_loss: Option<f64>,
    pub best_loss: Option<f64>,
    pub best_val: Option<f64>,
    /// The step of `best_val` (absent in checkpoints of older builds).
    #[serde(default)]
    pub best_val_step: Option<u64>,
    pub bad_evals: u64,
    pub elapsed_s: f64,
    /// SHA-256 of the frozen base model file of a LoRA run: a resume on a changed base would
    /// silently train another model (absent for full training and older checkpoints).
    #[serde(default)]
    pub base_sha256: Option<String>,
    /// The products' precision the steps ran in (`--precision` resolved on this machine;
    /// absent in checkpoints of builds before the option: f32).
    #[serde(default)]
    pub precision: Option<String>,
}

pub fn ckpt_err(msg: String) -> anyhow::Error {
    Coded::new("checkpoint", EXIT_CHECKPOINT, msg).into()
}

/// Finite values only: JSON has no NaN.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn named<'a>(layout: &ParamLayout, data: &'a [f32]) -> Vec<(String, Vec<usize>, &'a [f32])> {
    layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), &data[t.range()]))
        .collect()
}

/// Writes a checkpoint of the trainable tensors, the AdamW moments and `state`.
pub fn save(
    checkpoints: &Path,
    layout: &ParamLayout,
    weights: &[f32],
    adam: &AdamW,
    state: &TrainerState,
    tokenizer: &formats::hf::SaveOptions,
) -> anyhow::Result<PathBuf> {
    let json = serde_json::to_value(state)?;
    let files = [
        TensorFile {
            stem: "weights",
            tensors: named(layout, weights),
        },
        TensorFile {
            stem: "optimizer",
            tensors: vec![
                ("adam.m".into(), vec![adam.m.len()], &adam.m[..]),
                ("adam.v".into(), vec![adam.v.len()], &adam.v[..]),
            ],
        },
    ];
    // The tokenizer travels with the weights, so a checkpoint generates and exports alone.
    let extra = |dir: &Path| formats::hf::save_tokenizer_files(dir, tokenizer);
    checkpoint::save(checkpoints, state.step, &files, &json, &extra)
        .map_err(|e| ckpt_err(format!("writing checkpoint: {e}")))
}

/// Opens the latest checkpoint of `checkpoints` (None when there is none).
pub fn open_latest(checkpoints: &Path) -> anyhow::Result<Option<(Checkpoint, TrainerState)>> {
    let c = checkpoint::open_latest(checkpoints)
        .map_err(|e| ckpt_err(format!("cannot resume: {e}")))?;
    let Some(c) = c else { return Ok(None) };
    let state: TrainerState = serde_json::from_value(c.state.clone()).map_err(|e| {
        ckpt_err(format!(
            "{}: trainer state is not one this build wrote: {e}",
            c.dir.display()
        ))
    })?;
    Ok(Some((c, state)))
}

/// Copies the checkpoint's weights and moments into `weights` / `adam`, checking every shape.
pub fn restore_tensors(
    c: &Checkpoint,
    layout: &ParamLayout,
    weights: &mut [f32],
    adam: &mut AdamW,
    adam_t: u64,
) -> anyhow::Result<()> {
    let w = c.tensors("weights").map_err(|e| ckpt_err(format!("{e}")))?;
    for t in &layout.tensors {
        let r = t.range();
        w.read_f32(&t.name, &t.shape, &mut weights[r])
            .map_err(|e| {
                ckpt_err(format!(
                    "checkpoint does not fit this model/LoRA shape: {e}"
                ))
            })?;
    }
    let names = w.entries().map_err(|e| ckpt_err(format!("{e}")))?;
    if names.len() != layout.tensors.len() {
        return Err(ckpt_err(format!(
            "checkpoint {} holds {} trainable tensors, this run trains {}",
            c.dir.display(),
            names.len(),
            layout.tensors.len()
        )));
    }
    let o = c
        .tensors("optimizer")
        .map_err(|e| ckpt_err(format!("{e}")))?;
    let n = adam.m.len();
    o.read_f32("adam.m", &[n], &mut adam.m)
        .and_then(|()| o.read_f32("adam.v", &[n], &mut adam.v))
        .map_err(|e| ckpt_err(format!("optimizer state does not fit: {e}")))?;
    adam.t = adam_t;
    Ok(())
}
