//! `neuralforge generate`: text from a model (KV cache, sampling, chat templates), streamed to
//! the terminal or as `token` / `generate_done` events; `--bench` measures generation speed.

use crate::base_record::BaseChoice;
use crate::output::Output;
use anyhow::{bail, Context};
use data::{ChatMessage, ChatTemplate, Tokenizer};
use engine::infer::{
    self, GenerateOptions, InferenceSession, LogSoftmax, Sampler, SamplerConfig, StopReason,
    Weights,
};
use engine::quant::QuantModel;
use formats::{LoadedModel, TokenizerSource};
use protocol::{Event, TopLogprob};
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a model folder, .gguf, llama2.c .bin, checkpoint, adapter or run folder (its
    /// final model, else best/, else the latest checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// A LoRA adapter (PEFT folder or LoRA checkpoint): run unmerged on a GGUF's blocks,
    /// merged into the f32 weights otherwise (and with --dequantize).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Tokenizer to use instead of the model's own (tokenizer.json, tokenizer.bin or .gguf).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The prompt (in chat mode: the user's message; without it, chat reads turns from stdin).
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file (`-` = standard input).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Apply the model's chat template (system / user / assistant turns).
    #[arg(long)]
    pub chat: bool,
    /// System message for chat mode.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Chat mode: the whole conversation, a JSON array of {"role","content"} (system, user,
    /// assistant) ending with the user's turn to answer.
    #[arg(long, value_name = "FILE", requires = "chat", conflicts_with_all = ["prompt", "prompt_file"])]
    pub messages: Option<PathBuf>,
    /// Sampling temperature; 0 = greedy (always the most likely token).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Sample from the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches p (1 = all).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for tokens seen in the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: from the clock, reported so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// New tokens at most (0 = until EOS or the end of the context).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop when this text appears (not printed); may be given several times.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context length to allocate (default: prompt + max-tokens, at most the model's).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Measure prompt processing and generation speed instead of generating text.
    #[arg(long)]
    pub bench: bool,
    /// --bench: prompt tokens processed in one batch.
    #[arg(long, default_value_t = 128)]
    pub bench_prompt: usize,
    /// --bench: tokens generated one at a time.
    #[arg(long, default_value_t = 128)]
    pub bench_gen: usize,
    /// --bench: repetitions (reported as llama-bench does: the mean ± standard deviation).
    #[arg(long, default_value_t = 3)]
    pub bench_reps: usize,
    /// Run a quantized GGUF on its quantized blocks: the default for quantized files (kept
    /// for scripts that pass it).
    #[arg(long)]
    pub quantized: bool,
    /// Dequantize a quantized GGUF to f32 on load instead (the f32 path, for comparison).
    #[arg(long)]
    pub dequantize: bool,
    /// Quantized path: bits of the activations that meet Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 weights
    /// (16: logits within ~1e-3 of the f32 path; 8: llama.cpp's scheme, faster, ~0.5 off).
    #[arg(long, default_value_t = 16, value_parser = parse_act_bits)]
    pub act_bits: u8,
    /// Element type of the KV cache: f16 or bf16 halve its memory and the bytes attention
    /// reads per token (values rounded once when stored; all arithmetic stays f32).
    #[arg(long = "kv-cache", value_enum, default_value_t = KvCacheArg::F32)]
    pub kv_cache: KvCacheArg,
    /// Report each new token's log-probability and the N most likely tokens at its step
    /// (0-20), under the model's own distribution (raw logits, before temperature, penalties
    /// and filters): with --json as `logprob` / `top_logprobs` on each token event,
    /// otherwise as a table on stderr after the text.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=20))]
    pub logprobs: Option<u8>,
}

/// `--kv-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheArg {
    F32,
    F16,
    Bf16,
}

impl From<KvCacheArg> for engine::infer::KvType {
    fn from(a: KvCacheArg) -> Self {
        match a {
            KvCacheArg::F32 => engine::infer::KvType::F32,
            KvCacheArg::F16 => engine::infer::KvType::F16,
            KvCacheArg::Bf16 => engine::infer::KvType::BF16,
        }
    }
}

/// `--act-bits`: 8 or 16.
fn parse_act_bits(s: &str) -> Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("{s:?}: expected 8 or 16")),
    }
}

/// The activation precision of `--act-bits` (8 or 16, checked by clap).
pub fn act_precision(bits: u8) -> engine::quant::ActPrecision {
    if bits == 8 {
        engine::quant::ActPrecision::I8
    } else {
        engine::quant::ActPrecision::I16
    }
}

/// A model loaded for generation: metadata, and the quantized weights when it runs on them
/// (then `meta.params` holds no weight data).
pub struct InferModel {
    pub meta: LoadedModel,
    pub quant: Option<QuantModel>,
}

impl InferModel {
    pub fn weights(&self) -> Weights<'_> {
        match &self.quant {
            Some(q) => q.into(),
            None => (&self.meta.params).into(),
        }
    }
}

/// Loads `path` for inference, with `adapter` (a PEFT folder or LoRA checkpoint) on top when
/// given. A GGUF's matrices stay in its blocks (F32 ones too: no second copy of the weights),
/// and an adapter on a GGUF base (given as `adapter`, or `path` itself an adapter or LoRA
/// run recording such a base) runs unmerged on them, unless `dequantize` asks for the f32
/// `Params` path, where adapters are merged into the weights.
pub fn load_for_inference(
    path: &std::path::Path,
    dequantize: bool,
    adapter: Option<&std::path::Path>,
    out: &Output,
) -> anyhow::Result<InferModel> {
    let is_gguf =
        |p: &std::path::Path| matches!(formats::detect_format(p), Ok(formats::ModelFormat::Gguf));
    let (base, adapter, choice) = match adapter {
        Some(a) => (path.to_path_buf(), Some(a.to_path_buf()), BaseChoice::Given),
        None => match super::export::adapter_and_base(path)? {
            Some((a, b)) if is_gguf(&b) => (b, Some(a), BaseChoice::Recorded),
            _ => (path.to_path_buf(), None, BaseChoice::Recorded),
        },
    };
    if !dequantize && is_gguf(&base) {
        if let Some(a) = &adapter {
            crate::base_record::check(a, &base, choice, out)?;
        }
        let mut q = formats::gguf::load_quant_model(&base)
            .with_context(|| format!("loading model {}", base.display()))?;
        if let Some(a) = &adapter {
            let lora = super::export::load_any_adapter(a, &q.model.config)
                .with_context(|| format!("loading adapter {}", a.display()))?;
            q.model
                .attach_adapter(lora)
                .with_context(|| format!("adapter {}", a.display()))?;
            if a.join("tokenizer.json").is_file() {
                super::export::adopt_tokenizer_folder(&mut q.meta, a)?;
            }
            out.log(format!(
                "adapter {} runs unmerged on the blocks of {}",
                a.display(),
                base.display()
            ));
            q.meta.source = format!("{} + adapter {}", q.meta.source, a.display());
        }
        return Ok(InferModel {
            meta: q.meta,
            quant: Some(q.model),
        });
    }
    // Checkpoints, adapters and run folders load through the same path as export.
    let mut meta = super::export::load_runnable(path, out)
        .with_context(|| format!("loading model {}", path.display()))?;
    if let Some(a) = adapter.filter(|_| path == base.as_path()) {
        crate::base_record::check(&a, &base, BaseChoice::Given, out)?;
        let lora = super::export::load_any_adapter(&a, &meta.params.config)
            .with_context(|| format!("loading adapter {}", a.display()))?;
        lora.merge_into(&mut meta.params)
            .with_context(|| format!("merging adapter {}", a.display()))?;
    }
    Ok(InferModel { meta, quant: None })
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    engine::threads::set_threads(args.threads.unwrap_or(0)).context("--threads")?;
    out.event(&Event::Phase {
        phase: "loading".into(),
    });
    let t0 = Instant::now();
    let (path, note) = crate::inputs::resolve_model(&args.model, "--model")?;
    if let Some(n) = note {
        out.log(n);
    }
    let quantized = !args.dequantize;
    let mut loaded = load_for_inference(&path, !quantized, args.adapter.as_deref(), out)?;
    if let Some(q) = &mut loaded.quant {
        q.act_precision = act_precision(args.act_bits);
    }
    let model = &loaded.meta;
    out.log(format!(
        "loaded {} ({}) in {:.1}s",
        args.model.display(),
        model.source,
        t0.elapsed().as_secs_f64()
    ));
    let model = &loaded.meta;
    let weights = loaded.weights();
    if args.bench {
        return bench(&args, model, weights, out);
    }
    let tokenizer = load_tokenizer(&args, model)?;
    let mut args = args;
    if let Some(f) = &args.prompt_file {
        args.prompt = Some(read_prompt_file(f)?);
    }
    let args = &args;
    let seed = args.seed.unwrap_or_else(clock_seed);
    let sampler_cfg = SamplerConfig {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed,
    };
    let mut sampler = Sampler::new(sampler_cfg).context("sampling flags")?;
    out.event(&Event::Info {
        key: "seed".into(),
        value: seed.into(),
    });
    if !out.json && args.temp > 0.0 {
        out.log(format!("seed {seed} (--seed {seed} repeats this reply)"));
    }
    let mut eos_ids = model.eos_token_ids.clone();
    if let Some(e) = tokenizer.eos_id() {
        if !eos_ids.contains(&e) {
            eos_ids.push(e);
        }
    }
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        eos_ids,
    };
    if args.chat {
        chat(args, model, weights, &tokenizer, &mut sampler, &opts, out)
    } else {
        let prompt = args.prompt.as_deref().unwrap_or("");
        // A --tokenizer brings its own BOS rule; otherwise the model file's rule applies.
        let add_bos = if args.tokenizer.is_some() {
            tokenizer.add_bos()
        } else {
            model.add_bos
        };
        let mut ids = tokenizer
            .encode(prompt, add_bos)
            .context("encoding --prompt")?;
        if ids.is_empty() {
            // An empty prompt starts from BOS, as llama2.c does.
            ids.extend(model.bos_token_id.or(tokenizer.bos_id()));
        }
        if ids.is_empty() {
            bail!("--prompt is empty and the model has no BOS token to start from");
        }
        let capacity = context_size(args, model, ids.len())?;
        let mut session = InferenceSession::with_kv(weights, capacity, args.kv_cache.into())?;
        run_turn(
            &mut session,
            &mut sampler,
            &tokenizer,
            &ids,
            &opts,
            TurnControls {
                strings: &args.stop,
                interrupt: None,
                logprobs: args.logprobs.map(usize::from),
            },
            out,
        )?;
        Ok(())
    }
}

/// The tokenizer named by --tokenizer, or the model's own.
fn load_tokenizer(args: &Args, model: &LoadedModel) -> anyhow::Result<Tokenizer> {
    let path: PathBuf = match (&args.tokenizer, &model.tokenizer) {
        (Some(p), _) => p.clone(),
        (None, Some(TokenizerSource::HfJson(p) | TokenizerSource::Llama2cBin(p))) => p.clone(),
        (None, Some(TokenizerSource::Gguf { .. })) => model.path.clone(),
        (None, None) => bail!(
            "{} comes without a tokenizer: pass --tokenizer (tokenizer.json or tokenizer.bin)",
            model.path.display()
        ),
    };
    let tok = Tokenizer::from_path(&path)
        .with_context(|| format!("loading tokenizer {}", path.display()))?;
    let vocab = model.params.config.vocab_size;
    if tok.vocab_size() > vocab {
        bail!(
            "tokenizer {} has {} tokens but the model's vocabulary is {vocab}",
            path.display(),
            tok.vocab_size()
        );
    }
    Ok(tok)
}

/// Positions to allocate: room for the prompt and the new tokens, within the model's limit.
fn context_size(args: &Args, model: &LoadedModel, prompt_len: usize) -> anyhow::Result<usize> {
    let max = model.params.config.max_seq_len;
    let want = match (args.ctx, args.max_tokens) {
        (Some(c), _) => c,
        (None, 0) => max,
        (None, n) => prompt_len.saturating_add(n),
    };
    if want > max && args.ctx.is_some() {
        bail!("--ctx {want} exceeds the model's context of {max}");
    }
    let capacity = want.min(max);
    if prompt_len >= capacity {
        bail!("the prompt has {prompt_len} tokens but the context holds {capacity}");
    }
    Ok(capacity)
}

/// The prompt text of --prompt-file (`-` reads standard input to its end).
fn read_prompt_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("--prompt-file -: reading standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("--prompt-file {}", path.display()))?;
    }
    // A file usually ends with a newline the prompt does not mean.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Ctrl-C in chat mode: the first stops the reply being generated (the session goes on); a
/// second one before the flag is taken quits.
struct ReplyInterrupt(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ReplyInterrupt {
    fn install() -> anyhow::Result<ReplyInterrupt> {
        use signal_hook::consts::SIGINT;
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone())?;
        signal_hook::flag::register(SIGINT, flag.clone())?;
        Ok(ReplyInterrupt(flag))
    }

    /// Whether Ctrl-C was pressed since the last `take`, clearing it.
    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    fn pressed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What ends a reply besides EOS and the token budget: stop strings, and Ctrl-C in chat.
#[derive(Clone, Copy)]
struct TurnControls<'a> {
    /// Stop strings.
    strings: &'a [String],
    interrupt: Option<&'a ReplyInterrupt>,
    /// `--logprobs`: how many alternatives to report with each token.
    logprobs: Option<usize>,
}

/// What one generation produced.
struct TurnResult {
    tokens: Vec<u32>,
    text: String,
}

/// Prefills `prompt` on top of what `session` holds, generates, and streams the text.
fn run_turn(
    session: &mut InferenceSession<'_>,
    sampler: &mut Sampler,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    stops: TurnControls<'_>,
    out: &Output,
) -> anyhow::Result<TurnResult> {
    let TurnControls {
        strings: stops,
        interrupt,
        logprobs,
    } = stops;
    let start = Instant::now();
    let mut interrupted = false;
    let mut decoder = tokenizer.stream_decoder();
    let mut filter = StopFilter::new(stops);
    let mut text = String::new();
    let mut first_token_at = None;
    let stdout = std::io::stdout();
    // --logprobs in human mode: (token, log p, alternatives), shown after the text.
    let mut table: Vec<TokenLogprobs> = Vec::new();
    let emit = |piece: &str, token: Option<(u32, Option<TokenLogprobs>)>, text: &mut String| {
        text.push_str(piece);
        if let Some((id, lp)) = token {
            let (logprob, top) = lp.map_or((None, Vec::new()), |lp| (Some(lp.logprob), lp.top));
            out.event(&Event::Token {
                token_id: id,
                text: piece.to_string(),
                logprob,
                top_logprobs: top
                    .into_iter()
                    .map(|(token_id, logprob)| TopLogprob {
                        token_id,
                        text: tokenizer.decode(&[token_id]),
                        logprob,
                    })
                    .collect(),
            });
        }
        if !out.json && !piece.is_empty() {
            let mut lock = stdout.lock();
            let _ = lock.write_all(piece.as_bytes());
            let _ = lock.flush();
        }
    };
    let (tokens, reason) = infer::generate(session, sampler, prompt, opts, |id, logits| {
        first_token_at.get_or_insert_with(Instant::now);
        let piece = decoder.push(id).unwrap_or_default();
        let (ready, stopped) = filter.push(&piece);
        let lp = logprobs.map(|n| TokenLogprobs::of(id, logits, n));
        if let (Some(lp), false) = (&lp, out.json) {
            table.push(lp.clone());
        }
        emit(&ready, Some((id, lp)), &mut text);
        if interrupt.is_some_and(|i| i.pressed()) {
            interrupted = true;
            return ControlFlow::Break(());
        }
        if stopped {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(i) = interrupt {
        i.take();
    }
    if reason != StopReason::Caller || interrupted {
        // Bytes held back for an incomplete character or a possible stop string.
        let rest = decoder.flush().unwrap_or_default();
        let (ready, stopped) = filter.push(&rest);
        let tail = if stopped {
            ready
        } else {
            ready + &filter.finish()
        };
        emit(&tail, None, &mut text);
    }
    if !out.json {
        println!();
    }
    print_logprobs(&table, tokenizer, out);
    let total = start.elapsed();
    let stop_reason = if interrupted {
        "interrupted"
    } else {
        reason.as_str()
    };
    out.event(&Event::GenerateDone {
        tokens: tokens.len() as u64,
        total_ms: total.as_secs_f64() * 1e3,
        stop_reason: Some(stop_reason.into()),
    });
    let prefill_s = first_token_at
        .map(|t| (t - start).as_secs_f64())
        .unwrap_or(total.as_secs_f64());
    let decode_s = total.as_secs_f64() - prefill_s;
    // The first token comes from the prefill; a rate needs at least one decoded after it.
    let gen_rate = match tokens.len() {
        n if n > 1 && decode_s > 0.0 => format!(", {:.1} tok/s", (n - 1) as f64 / decode_s),
        _ => String::new(),
    };
    out.log(format!(
        "[{} prompt token{} in {:.0} ms ({:.0} tok/s), {} new token{}{gen_rate}; stop: {}]",
        prompt.len(),
        plural(prompt.len()),
        prefill_s * 1e3,
        prompt.len() as f64 / prefill_s.max(1e-9),
        tokens.len(),
        plural(tokens.len()),
        stop_reason
    ));
    Ok(TurnResult { tokens, text })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One step's `--logprobs`: the chosen token's log-probability and the most likely tokens.
#[derive(Clone)]
struct TokenLogprobs {
    token: u32,
    logprob: f64,
    top: Vec<(u32, f64)>,
}

impl TokenLogprobs {
    fn of(token: u32, logits: &[f32], n: usize) -> Self {
        let lp = LogSoftmax::new(logits);
        TokenLogprobs {
            token,
            logprob: lp.of(token),
            top: lp.top(n),
        }
    }
}

/// The human-mode `--logprobs` table, on stderr.
fn print_logprobs(table: &[TokenLogprobs], tokenizer: &Tokenizer, out: &Output) {
    if table.is_empty() {
        return;
    }
    let show = |id: u32| format!("{:?}", tokenizer.decode(&[id]));
    out.log("log-probabilities (token, log p; then the most likely tokens at that step):");
    for step in table {
        let alternatives: Vec<String> = step
            .top
            .iter()
            .map(|&(id, lp)| format!("{} {lp:.3}", show(id)))
            .collect();
        out.log(format!(
            "  {:<16} {:>8.3}   {}",
            show(step.token),
            step.logprob,
            alternatives.join("  ")
        ));
    }
}

/// Chat mode: one turn from --prompt, or a conversation read line by line from stdin.
fn chat(
    args: &Args,
    model: &LoadedModel,
    weights: Weights<'_>,
    tokenizer: &Tokenizer,
    sampler: &mut Sampler,
    opts: &GenerateOptions,
    out: &Output,
) -> anyhow::Result<()> {
    let source = model
        .chat_template
        .as_deref()
        .or(tokenizer.chat_template())
        .with_context(|| format!("{} has no chat template", args.model.display()))?;
    let piece = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_piece(i))
            .unwrap_or_default()
    };
    let bos = model
        .bos_token
        .clone()
        .unwrap_or_else(|| piece(model.bos_token_id));
    let eos = model
        .eos_token
        .clone()
        .unwrap_or_else(|| piece(model.eos_token_ids.first().copied()));
    let template = ChatTemplate::new(source, &bos, &eos).context("the model's chat template")?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.as_str()));
    }
    let capacity = match args.ctx {
        Some(c) => c.min(model.params.config.max_seq_len),
        None => model.params.config.max_seq_len.min(4096),
    };
    let mut session = InferenceSession::with_kv(weights, capacity, args.kv_cache.into())?;
    let interactive = args.prompt.is_none()
        && args.messages.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let interrupt = if interactive {
        Some(ReplyInterrupt::install()?)
    } else {
        None
    };
    // Tokens the KV cache holds, to reuse the common prefix of the next rendering.
    let mut cached: Vec<u32> = Vec::new();
    let mut turn = |user: String, messages: &mut Vec<ChatMessage>| -> anyhow::Result<()> {
        messages.push(ChatMessage::new("user", user));
        let text = template
            .render(messages, true)
            .context("rendering the chat template")?;
        let ids = tokenizer
            .encode_special(&text, false)
            .context("encoding the chat")?;
        let keep = cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        session.truncate(keep);
        cached.truncate(keep);
        let room = capacity.saturating_sub(ids.len());
        if room == 0 {
            bail!("the conversation no longer fits the context of {capacity} tokens (--ctx)");
        }
        if let Some(i) = &interrupt {
            // A Ctrl-C pressed at the prompt is not meant for this reply.
            i.take();
        }
        let turn_opts = GenerateOptions {
            max_tokens: if opts.max_tokens == 0 {
                room
            } else {
                opts.max_tokens.min(room)
            },
            eos_ids: opts.eos_ids.clone(),
        };
        let result = run_turn(
            &mut session,
            sampler,
            tokenizer,
            &ids[keep..],
            &turn_opts,
            TurnControls {
                strings: &args.stop,
                interrupt: interrupt.as_ref(),
                logprobs: args.logprobs.map(usize::from),
            },
            out,
        )?;
        cached.extend_from_slice(&ids[keep..]);
        cached.extend_from_slice(&result.tokens);
        cached.truncate(session.position());
        messages.push(ChatMessage::new("assistant", result.text.trim()));
        Ok(())
    };
    if let Some(f) = &args.messages {
        let (history, last) = super::chat_messages::load(f)?;
        messages.extend(history);
        return turn(last, &mut messages);
    }
    if let Some(p) = &args.prompt {
        return turn(p.clone(), &mut messages);
    }
    let system: Vec<ChatMessage> = messages.clone();
    if interactive {
        out.log(
            "chat: type a message and press Enter; /reset starts over, /exit (or Ctrl-D) ends; \
             Ctrl-C stops a reply",
        );
    }
    let prompt_marker = || {
        if interactive {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "> ");
            let _ = e.flush();
        }
    };
    prompt_marker();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        match line.trim() {
            "" => {}
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = system.clone();
                out.log("(conversation cleared)");
            }
            _ => turn(line, &mut messages)?,
        }
        prompt_marker();
    }
    Ok(())
}

/// Holds back text that may be the start of a stop string; reports when one appears.
struct StopFilter<'a> {
    stops: &'a [String],
    pending: String,
}

impl<'a> StopFilter<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopFilter {
            stops,
            pending: String::new(),
        }
    }

    /// Adds text; returns what can be shown and whether a stop string was found (the text
    /// before it is returned, the stop string and anything after are dropped).
    fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let ready = self.pending[..at].to_string();
            self.pending.clear();
            return (ready, true);
        }
        // Keep the longest tail that could still grow into a stop string.
        let mut hold = 0;
        for s in self.stops {
            for (i, _) in self.pending.char_indices() {
                let tail = &self.pending[i..];
                if tail.len() < s.len() && s.starts_with(tail) {
                    hold = hold.max(tail.len());
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let ready = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (ready, false)
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// `--bench`: prompt processing of --bench-prompt tokens in one batch, generation of
/// --bench-gen tokens, and the read bandwidth of this machine as the yardstick.
fn bench(
    args: &Args,
    model: &LoadedModel,
    weights: Weights<'_>,
    out: &Output,
) -> anyhow::Result<()> {
    let cfg = &model.params.config;
    let (np, ng) = (args.bench_prompt.max(1), args.bench_gen.max(1));
    let capacity = np + ng;
    if capacity > cfg.max_seq_len {
        bail!(
            "--bench-prompt + --bench-gen = {capacity} exceeds the model's context of {}",
            cfg.max_seq_len
        );
    }
    let reps = args.bench_reps.max(1);
    let mut session = InferenceSession::with_kv(weights, capacity, args.kv_cache.into())?;
    // Arbitrary but fixed prompt ids spread over the vocabulary.
    let prompt: Vec<u32> = (0..np)
        .map(|i| ((i as u64 * 7919 + 13) % cfg.vocab_size as u64) as u32)
        .collect();
    session.prefill(&prompt)?; // warm-up: page faults, thread start-up
    let mut pp_rates = Vec::with_capacity(reps);
    let mut tg_rates = Vec::with_capacity(reps);
    let mut bandwidth = 0.0f64;
    for _ in 0..reps {
        session.reset();
        let t = Instant::now();
        session.prefill(&prompt)?;
        pp_rates.push(np as f64 / t.elapsed().as_secs_f64());
        // Generation as llama-bench's tg: from an empty cache, one token at a time.
        session.reset();
        let mut token = prompt[0];
        let t = Instant::now();
        for _ in 0..ng {
            token = infer::argmax(session.decode(token)?);
        }
        tg_rates.push(ng as f64 / t.elapsed().as_secs_f64());
        // Bandwidth in every repetition, next to the decode it bounds: on a shared machine
        // both then see the same contention.
        bandwidth = bandwidth.max(infer::bench::measure_read_bandwidth_of_weights(
            weights, 0.5,
        ));
    }
    let (pp, pp_sd, pp_best) = mean_sd_max(&pp_rates);
    let (tg, tg_sd, tg_best) = mean_sd_max(&tg_rates);
    let weight_bytes = weights.bytes_per_token();
    // Streamed over the weights themselves: the same bytes, pages and cache state as decode.
    let buffer = infer::bench::weights_buffer_bytes(weights);
    let bound = bandwidth / weight_bytes as f64;
    let value = serde_json::json!({
        "model": model.path.display().to_string(),
        "source": model.source,
        "threads": engine::threads::current(),
        "simd": infer::Simd::detect().name(),
        "quantized": matches!(weights, Weights::Quant(_)),
        "quant_kernels": engine::quant::dot::level().name(),
        "act_bits": match weights {
            Weights::Quant(m) if m.act_precision == engine::quant::ActPrecision::I8 => 8,
            Weights::Quant(_) => 16,
            Weights::Dense(_) => 32,
        },
        "kv_cache": session.cache().kind().name(),
        "kv_cache_bytes": session.cache().bytes(),
        "prompt_tokens": np,
        "prompt_tokens_per_s": pp,
        "prompt_tokens_per_s_sd": pp_sd,
        "prompt_tokens_per_s_best": pp_best,
        "gen_tokens": ng,
        "gen_tokens_per_s": tg,
        "gen_tokens_per_s_sd": tg_sd,
        "gen_tokens_per_s_best": tg_best,
        "weight_bytes_per_token": weight_bytes,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "bandwidth_buffer_bytes": buffer,
        "gen_bound_tokens_per_s": bound,
        "gen_fraction_of_bound": tg / bound,
        "reps": reps,
    });
    out.event(&Event::Info {
        key: "generate_bench".into(),
        value: value.clone(),
    });
    if !out.json {
        println!(
            "model {} ({}), {} threads, f32 kernels {}, quantized kernels {}, activations {} bits, KV cache {}",
            model.path.display(),
            model.source,
            engine::threads::current(),
            infer::Simd::detect().name(),
            engine::quant::dot::level().name(),
            value["act_bits"],
            session.cache().kind().name()
        );
        println!("prompt processing ({np} tokens): {pp:.1} ± {pp_sd:.1} tok/s (best {pp_best:.1})");
        println!("generation ({ng} tokens):        {tg:.1} ± {tg_sd:.1} tok/s (best {tg_best:.1})");
        println!(
            "memory bound: {:.1} MB of weights per token / {:.1} GB/s read bandwidth = {bound:.1} tok/s; generation reaches {:.0}% of it",
            weight_bytes as f64 / 1e6,
            bandwidth / 1e9,
            100.0 * tg / bound
        );
    }
    Ok(())
}

/// Mean, sample standard deviation and maximum of per-repetition rates: llama-bench reports
/// the mean ± standard deviation of its repetitions' tokens/s, so ours does too.
fn mean_sd_max(rates: &[f64]) -> (f64, f64, f64) {
    let n = rates.len().max(1) as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let var = if rates.len() > 1 {
        rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let max = rates.iter().cloned().fold(0.0, f64::max);
    (mean, var.sqrt(), max)
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut shown = String::new();
        for p in pieces {
            let (ready, stopped) = f.push(p);
            shown.push_str(&ready);
            if stopped {
                return (shown, true);
            }
        }
        shown.push_str(&f.finish());
        (shown, false)
    }

    #[test]
    fn stop_string_split_across_pieces_is_not_shown() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\nUs", "er: more"]),
            ("Hi there".into(), true)
        );
    }

    #[test]
    fn near_miss_is_released() {
        assert_eq!(run(&["STOP"], &["ST"]), ("ST".into(), false));
        assert_eq!(run(&["STOP"], &["ST", "ART"]), ("START".into(), false));
    }

    #[test]
    fn earliest_stop_wins_and_unicode_is_safe() {
        assert_eq!(run(&["é!", "b"], &["aé", "!b"]), ("a".into(), true));
    }
}
