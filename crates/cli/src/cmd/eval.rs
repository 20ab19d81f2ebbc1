//! `neuralforge eval`: mean cross-entropy and perplexity of a model over a raw token file.
//!
//! Windows follow llama2.c: window i holds tokens [i*T, i*T + T + 1) (inputs are the first T,
//! targets the last T), so consecutive windows share one token and every token after the first
//! is predicted exactly once.

use crate::output::Output;
use anyhow::{bail, Context};
use engine::model::{forward_loss, LossSum, Workspace};
use engine::Params;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a model folder, GGUF, llama2.c .bin, checkpoint or run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A LoRA adapter (PEFT folder or LoRA checkpoint) on top of --model: run unmerged on a
    /// GGUF's blocks, merged into the f32 weights otherwise.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Data, as `train --data` takes it: raw token ids, .txt, .jsonl or an ingested folder.
    #[arg(long, alias = "tokens")]
    pub data: PathBuf,
    /// Split of an ingested folder (default: val when it has one, else train).
    #[arg(long, value_parser = ["train", "val"])]
    pub split: Option<String>,
    /// Element type of raw token files.
    #[arg(long, value_parser = ["u16", "u32"], default_value = "u16")]
    pub token_dtype: String,
    /// Raw token ids are uint32 (the same as --token-dtype u32).
    #[arg(long, hide = true)]
    pub u32: bool,
    /// Tokenizer for text data when the model has none (tokenizer.json or tokenizer.bin).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Evaluate an ingested dataset whose recorded tokenizer differs from the model's.
    #[arg(long)]
    pub allow_tokenizer_mismatch: bool,
    /// Tokens predicted per window (T) [default: 256, at most the model's context].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Windows evaluated at once.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Evaluate at most this many windows (from the start of the data).
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Operand precision of the f32 path's products: f32, bf16 (AVX-512 BF16) or auto (a
    /// quantized model runs its own kernels either way).
    #[arg(long, default_value = "f32", value_parser = crate::precision::CHOICES)]
    pub precision: String,
    /// Evaluate a quantized GGUF on its quantized blocks: the default for quantized files
    /// (kept for scripts that pass it).
    #[arg(long)]
    pub quantized: bool,
    /// Dequantize a quantized GGUF to f32 instead (the f32 path, for comparison).
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

/// Windows of `seq` + 1 tokens (sharing one token) in `n` tokens, at most `max_windows`.
fn eval_windows(n: usize, seq: usize, max_windows: Option<usize>) -> anyhow::Result<usize> {
    let available = n.saturating_sub(1) / seq;
    let windows = max_windows.map_or(available, |m| m.min(available));
    if windows == 0 {
        bail!(
            "the token file holds {n} tokens: not enough for one window of {} (--seq-len + 1)",
            seq + 1
        );
    }
    Ok(windows)
}

/// Mean cross-entropy of `params` over the windows of `tokens` (the testable core of the command).
pub fn evaluate(
    params: &Params,
    tokens: &[u32],
    mask: Option<&[u8]>,
    seq: usize,
    batch: usize,
    max_windows: Option<usize>,
) -> anyhow::Result<EvalResult> {
    if seq == 0 || batch == 0 {
        bail!("--seq-len and --batch-size must be at least 1");
    }
    let windows = eval_windows(tokens.len(), seq, max_windows)?;
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
            if let Some(m) = mask {
                // Context-only positions (e.g. prompts of chat data) are not scored.
                let n = targets.len();
                for (t, &keep) in targets[n - seq..]
                    .iter_mut()
                    .zip(&m[w * seq + 1..w * seq + seq + 1])
                {
                    if keep == 0 {
                        *t = engine::model::IGNORE_INDEX;
                    }
                }
            }
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
/// through the KV-cache session (`prefill_all_logits`), the same windows and the same
/// scored positions (`mask`) as [`evaluate`].
pub fn evaluate_quantized(
    model: &engine::quant::QuantModel,
    tokens: &[u32],
    mask: Option<&[u8]>,
    seq: usize,
    max_windows: Option<usize>,
) -> anyhow::Result<EvalResult> {
    if seq == 0 {
        bail!("--seq-len must be at least 1");
    }
    let windows = eval_windows(tokens.len(), seq, max_windows)?;
    let v = model.config.vocab_size;
    let mut session = engine::infer::InferenceSession::new(model, seq)?;
    let mut total = LossSum::default();
    for w in 0..windows {
        let win = &tokens[w * seq..w * seq + seq + 1];
        session.reset();
        let logits = session.prefill_all_logits(&win[..seq])?;
        for (i, (row, &target)) in logits.chunks_exact(v).zip(&win[1..]).enumerate() {
            if mask.is_some_and(|m| m[w * seq + 1 + i] == 0) {
                // Context-only positions (e.g. prompts of chat data) are not scored.
                continue;
            }
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
    use crate::trainer::{data_source, model_setup::TokEncode};
    engine::threads::set_threads(args.threads).context("--threads")?;
    let (_, precision_why) = crate::precision::apply(&args.precision)?;
    if args.precision != "f32" {
        out.log(format!("precision: {precision_why}"));
    }
    let (path, note) = crate::inputs::resolve_model(&args.model, "--model")?;
    if let Some(n) = note {
        out.log(n);
    }
    let quantized = !args.dequantize;
    let loaded =
        super::generate::load_for_inference(&path, !quantized, args.adapter.as_deref(), out)?;
    let model = &loaded.meta;
    let vocab = model.params.config.vocab_size;
    let tokenizer = match (&args.tokenizer, &model.tokenizer) {
        (Some(p), _) => Some(
            data::Tokenizer::from_path(p)
                .with_context(|| format!("--tokenizer {}", p.display()))?,
        ),
        (None, Some(src)) => data::Tokenizer::from_source(src).ok(),
        (None, None) => None,
    };
    if args.data.is_dir() {
        crate::inputs::check_dataset_tokenizer(
            &args.data,
            tokenizer.as_ref(),
            args.allow_tokenizer_mismatch,
        )?;
    }
    let dtype = if args.u32 {
        "u32"
    } else {
        args.token_dtype.as_str()
    };
    let enc = tokenizer.as_ref().map(TokEncode);
    let enc_ref = enc.as_ref().map(|e| e as &dyn data_source::Encode);
    let data = match &args.split {
        Some(split) => data_source::load_split(&args.data, split, dtype, enc_ref, vocab)?
            .ok_or_else(|| {
                anyhow::anyhow!("{}: the {split} split is empty", args.data.display())
            })?,
        None if args.data.is_dir() => {
            match data_source::load_split(&args.data, "val", dtype, enc_ref, vocab)? {
                Some(v) => v,
                None => data_source::load(&args.data, dtype, enc_ref, vocab)?,
            }
        }
        None => data_source::load(&args.data, dtype, enc_ref, vocab)?,
    };
    let max_seq = model.params.config.max_seq_len;
    let seq = args.seq_len.unwrap_or(256.min(max_seq));
    if seq > max_seq {
        return Err(crate::output::Coded::new(
            "invalid_argument",
            2,
            format!("--seq-len is {seq}, must be at most the model's context length {max_seq}"),
        )
        .into());
    }
    out.log(format!("data: {}", data.source));
    let start = std::time::Instant::now();
    let r = match &loaded.quant {
        Some(q) => {
            evaluate_quantized(q, &data.tokens, data.mask.as_deref(), seq, args.max_windows)?
        }
        None => evaluate(
            &model.params,
            &data.tokens,
            data.mask.as_deref(),
            seq,
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
