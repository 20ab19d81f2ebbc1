//! `neuralforge eval`: mean cross-entropy and perplexity of a model over a raw token file.
//!
//! Windows follow llama2.c: window i holds tokens [i*T, i*T + T + 1) (inputs are the first T,
//! targets the last T), so consecutive windows share one token and every token after the first
//! is predicted exactly once.

use crate::output::Output;
use anyhow::{bail, Context};
use engine::model::{forward_loss, LossSum, Workspace};
use engine::Params;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Model: Hugging Face folder, GGUF file or llama2.c .bin.
    #[arg(long)]
    pub model: PathBuf,
    /// Raw little-endian token ids (uint16, or uint32 with --u32).
    #[arg(long)]
    pub tokens: PathBuf,
    /// Tokens predicted per window (T).
    #[arg(long)]
    pub seq_len: usize,
    /// Windows evaluated at once.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Evaluate at most this many windows (from the start of the file).
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Token ids are uint32 instead of uint16.
    #[arg(long)]
    pub u32: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Dequantize a quantized GGUF to f32 (the training forward pass) instead of evaluating
    /// on its quantized blocks.
    #[arg(long)]
    pub dequantize: bool,
}

/// What an evaluation measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
    pub windows: usize,
    pub seq_len: usize,
}

/// Reads a raw token file; every id must be below `vocab`.
pub fn read_tokens(path: &Path, wide: bool, vocab: usize) -> anyhow::Result<Vec<u32>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading token file {}", path.display()))?;
    let width = if wide { 4 } else { 2 };
    if bytes.len() % width != 0 {
        bail!(
            "token file {}: {} bytes is not a multiple of {width} (uint{} ids)",
            path.display(),
            bytes.len(),
            width * 8
        );
    }
    let tokens: Vec<u32> = if wide {
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect()
    };
    if let Some((pos, id)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        bail!("token file {}: id {id} at position {pos} is not below the model's vocabulary size {vocab}", path.display());
    }
    Ok(tokens)
}

/// Mean cross-entropy of `params` over the windows of `tokens` (the testable core of the command).
pub fn evaluate(
    params: &Params,
    tokens: &[u32],
    seq: usize,
    batch: usize,
    max_windows: Option<usize>,
) -> anyhow::Result<EvalResult> {
    if seq == 0 || batch == 0 {
        bail!("--seq-len and --batch-size must be at least 1");
    }
    let available = tokens.len().saturating_sub(1) / seq;
    let windows = max_windows.map_or(available, |m| m.min(available));
    if windows == 0 {
        bail!(
            "the token file holds {} tokens: not enough for one window of {} (--seq-len + 1)",
            tokens.len(),
            seq + 1
        );
    }
    let mut total = LossSum::default();
    let mut ws: Option<Workspace> = None;
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for first in (0..windows).step_by(batch) {
        let b = batch.min(windows - first);
        if ws.as_ref().is_none_or(|w| w.batch() != b) {
            ws = Some(Workspace::new(&params.config, b, seq, None)?);
        }
        inputs.clear();
        targets.clear();
        for w in first..first + b {
            let win = &tokens[w * seq..w * seq + seq + 1];
            inputs.extend_from_slice(&win[..seq]);
            targets.extend_from_slice(&win[1..]);
        }
        if let Some(ws) = ws.as_mut() {
            total.add(forward_loss(params, None, ws, &inputs, &targets)?);
        }
    }
    let loss = total.mean();
    Ok(EvalResult {
        loss,
        perplexity: loss.exp(),
        tokens: total.count,
        windows,
        seq_len: seq,
    })
}

/// Mean cross-entropy on the quantized inference path: each window is one causal prefill
/// through the KV-cache session (`prefill_all_logits`), the same windows as [`evaluate`].
pub fn evaluate_quantized(
    model: &engine::quant::QuantModel,
    tokens: &[u32],
    seq: usize,
    max_windows: Option<usize>,
) -> anyhow::Result<EvalResult> {
    if seq == 0 {
        bail!("--seq-len must be at least 1");
    }
    let available = tokens.len().saturating_sub(1) / seq;
    let windows = max_windows.map_or(available, |m| m.min(available));
    if windows == 0 {
        bail!(
            "the token file holds {} tokens: not enough for one window of {} (--seq-len + 1)",
            tokens.len(),
            seq + 1
        );
    }
    let v = model.config.vocab_size;
    let mut session = engine::infer::InferenceSession::new(model, seq)?;
    let mut total = LossSum::default();
    for w in 0..windows {
        let win = &tokens[w * seq..w * seq + seq + 1];
        session.reset();
        let logits = session.prefill_all_logits(&win[..seq])?;
        for (row, &target) in logits.chunks_exact(v).zip(&win[1..]) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total.sum += lse - row[target as usize] as f64;
            total.count += 1;
        }
    }
    let loss = total.mean();
    Ok(EvalResult {
        loss,
        perplexity: loss.exp(),
        tokens: total.count,
        windows,
        seq_len: seq,
    })
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    engine::threads::set_threads(args.threads).context("--threads")?;
    let loaded = super::generate::load_for_inference(&args.model, args.dequantize, false)?;
    let vocab = loaded.meta.params.config.vocab_size;
    let tokens = read_tokens(&args.tokens, args.u32, vocab)?;
    let start = std::time::Instant::now();
    let r = match &loaded.quant {
        Some(q) => evaluate_quantized(q, &tokens, args.seq_len, args.max_windows)?,
        None => evaluate(
            &loaded.meta.params,
            &tokens,
            args.seq_len,
            args.batch_size,
            args.max_windows,
        )?,
    };
    let secs = start.elapsed().as_secs_f64();
    if out.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = serde_json::json!(secs);
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "loss {:.6}  perplexity {:.4}  ({} tokens in {} windows of {}, {:.1} s)",
            r.loss, r.perplexity, r.tokens, r.windows, r.seq_len, secs
        );
    }
    Ok(())
}
