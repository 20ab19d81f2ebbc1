//! `neuralforge export`: a model, checkpoint or adapter out as GGUF, Hugging Face, llama2.c
//! or PEFT. `--merge` folds a LoRA adapter into the base weights (f32) first.

use crate::base_record::BaseChoice;
use crate::output::Output;
use anyhow::{bail, Context};
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::{ModelConfig, Params};
use formats::checkpoint::Checkpoint;
use formats::gguf::{self, GgmlType};
use formats::hf::{self, SaveOptions};
use formats::safetensors_io::DType;
use formats::{llama2c, peft, LoadedModel, TokenizerSource};
use protocol::Event;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Gguf,
    Hf,
    Llama2c,
    Peft,
    /// A folder with model.gguf and an Ollama Modelfile (`ollama create NAME -f DIR/Modelfile`).
    Ollama,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutDtype {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    /// llama.cpp's Q4_K_M mix.
    #[value(name = "q4_k")]
    Q4K,
    /// llama.cpp's Q5_K_M mix.
    #[value(name = "q5_k")]
    Q5K,
    #[value(name = "q6_k")]
    Q6K,
}

impl OutDtype {
    /// The GGUF main type (for q4_k/q5_k the mix `gguf::mix` builds around it).
    pub fn gguf_type(self) -> GgmlType {
        match self {
            OutDtype::F32 => GgmlType::F32,
            OutDtype::F16 => GgmlType::F16,
            OutDtype::Bf16 => GgmlType::BF16,
            OutDtype::Q8_0 => GgmlType::Q8_0,
            OutDtype::Q4_0 => GgmlType::Q4_0,
            OutDtype::Q4_1 => GgmlType::Q4_1,
            OutDtype::Q4K => GgmlType::Q4K,
            OutDtype::Q5K => GgmlType::Q5K,
            OutDtype::Q6K => GgmlType::Q6K,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, GGUF, llama2.c .bin, training checkpoint folder, or (for --format peft) an adapter folder.
    pub src: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Output file (gguf, llama2c) or folder (hf, peft, ollama).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage type: gguf/ollama f32|f16|bf16|q8_0|q4_0|q4_1|q4_k|q5_k|q6_k (q4_k and q5_k are
    /// llama.cpp's _M mixes), hf f32|f16|bf16, llama2c f32 only.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: OutDtype,
    /// LoRA adapter folder (PEFT) to fold into the base weights before exporting.
    #[arg(long)]
    pub merge: Option<PathBuf>,
    /// Tokenizer to write with the model instead of its own (tokenizer.json, llama2.c
    /// tokenizer.bin, or a model folder holding tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Replace outputs that already exist (the model and, for llama2c, tokenizer.bin beside it).
    #[arg(long)]
    pub force: bool,
}

/// What a training checkpoint folder holds.
pub enum CheckpointContents {
    Model(Params),
    Adapter(LoraParams),
}

/// A checkpoint's weights with the model shape (and LoRA settings) from its trainer state,
/// plus the base model path the run started from, if it recorded one.
pub fn open_checkpoint(
    dir: &Path,
) -> anyhow::Result<(CheckpointContents, ModelConfig, Option<PathBuf>, u64)> {
    let c = Checkpoint::open(dir)?;
    let state = &c.state;
    let model: ModelConfig = serde_json::from_value(
        state.get("model").cloned().unwrap_or_default(),
    )
    .with_context(|| {
        format!(
            "{}: trainer state has no usable `model` shape",
            dir.display()
        )
    })?;
    let tc = state.get("config");
    let base = tc
        .and_then(|t| t.get("model"))
        .and_then(|m| m.as_str())
        .map(PathBuf::from);
    let rank = tc
        .and_then(|t| t.get("lora_rank"))
        .and_then(|r| r.as_u64())
        .unwrap_or(0) as usize;
    let w = c.tensors("weights")?;
    if rank == 0 {
        let mut p =
            Params::zeros(&model).with_context(|| format!("{}: model shape", dir.display()))?;
        let layout = p.layout.clone();
        for t in &layout.tensors {
            w.read_f32(&t.name, &t.shape, &mut p.data[t.range()])?;
        }
        return Ok((CheckpointContents::Model(p), model, base, c.step));
    }
    let targets_text = tc
        .and_then(|t| t.get("lora_targets"))
        .and_then(|r| r.as_str())
        .unwrap_or("");
    let targets = targets_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<LoraTarget>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: lora_targets {targets_text:?}", dir.display()))?;
    let lc = LoraConfig {
        rank,
        alpha: tc
            .and_then(|t| t.get("lora_alpha"))
            .and_then(|r| r.as_f64())
            .unwrap_or(2.0 * rank as f64),
        targets,
        dropout: tc
            .and_then(|t| t.get("lora_dropout"))
            .and_then(|r| r.as_f64())
            .unwrap_or(0.0) as f32,
    };
    let mut l = LoraParams::zeros(&model, &lc)
        .with_context(|| format!("{}: LoRA settings", dir.display()))?;
    let layout = l.layout.clone();
    for t in &layout.tensors {
        w.read_f32(&t.name, &t.shape, &mut l.data[t.range()])?;
    }
    Ok((CheckpointContents::Adapter(l), model, base, c.step))
}

/// Loads SRC as a model: a model file/folder, or a full-model checkpoint (keeping the tokenizer
/// and template of the base model it was trained from, when that is still there).
pub fn load_any_model(src: &Path, out: &Output) -> anyhow::Result<LoadedModel> {
    if src.join("trainer_state.json").is_file() {
        let (contents, model, base, step) = open_checkpoint(src)?;
        let CheckpointContents::Model(params) = contents else {
            bail!("{}: a LoRA checkpoint: export it with --format peft, or merge it with --merge into its base", src.display());
        };
        out.log(format!("checkpoint {} (step {step})", src.display()));
        let mut m = match base.as_deref().filter(|b| b.exists()) {
            Some(b) => formats::load_model(b)
                .with_context(|| format!("base model {} of the checkpoint", b.display()))?,
            None => LoadedModel {
                params: params.clone(),
                tokenizer: None,
                chat_template: None,
                bos_token_id: None,
                eos_token_ids: vec![],
                pad_token_id: None,
                add_bos: false,
                add_eos: false,
                bos_token: None,
                eos_token: None,
                generation_config: None,
                format: formats::ModelFormat::Hf,
                source: "checkpoint".into(),
                path: src.to_path_buf(),
            },
        };
        if m.params.config != model {
            bail!(
                "{}: the checkpoint's model shape differs from its base model {}",
                src.display(),
                m.path.display()
            );
        }
        m.params = params;
        m.source = format!("checkpoint step {step}");
        if src.join("tokenizer.json").is_file() {
            // The tokenizer the run trained with, saved in the checkpoint itself.
            adopt_tokenizer_folder(&mut m, src)?;
        }
        return Ok(m);
    }
    Ok(formats::load_model(src)?)
}

/// `(adapter, base)` when `path` is an adapter (a PEFT folder or a LoRA checkpoint): the
/// adapter and the base model it records; `None` for anything else.
pub fn adapter_and_base(path: &Path) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let base_of_adapter = |p: &Path| -> anyhow::Result<PathBuf> {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.join("adapter_config.json"))
                .with_context(|| format!("{}: adapter_config.json", p.display()))?,
        )
        .with_context(|| format!("{}: adapter_config.json", p.display()))?;
        cfg.get("base_model_name_or_path")
            .and_then(|b| b.as_str())
            .map(PathBuf::from)
            .filter(|b| b.exists())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: a LoRA adapter whose base model is not recorded or no longer there; \
                     give the base as --model and this folder as --adapter",
                    p.display()
                )
            })
    };
    if path.join("adapter_config.json").is_file() {
        return Ok(Some((path.to_path_buf(), base_of_adapter(path)?)));
    }
    if !path.join("trainer_state.json").is_file() {
        return Ok(None);
    }
    match open_checkpoint(path)? {
        (CheckpointContents::Adapter(_), _, Some(base), _) if base.exists() => {
            Ok(Some((path.to_path_buf(), base)))
        }
        (CheckpointContents::Adapter(_), ..) => bail!(
            "{}: a LoRA checkpoint whose base model is not recorded or no longer there; \
             give the base as --model and this checkpoint as --adapter",
            path.display()
        ),
        _ => Ok(None),
    }
}

/// Loads anything that runs as a model: a model file or folder, a full-model checkpoint, or
/// an adapter (a PEFT folder or a LoRA checkpoint) merged into the base model it records.
pub fn load_runnable(path: &Path, out: &Output) -> anyhow::Result<LoadedModel> {
    let Some((adapter, base)) = adapter_and_base(path)? else {
        return load_any_model(path, out);
    };
    crate::base_record::check(&adapter, &base, BaseChoice::Recorded, out)?;
    let mut m = load_any_model(&base, out)?;
    let lora = load_any_adapter(&adapter, &m.params.config)?;
    lora.merge_into(&mut m.params)
        .with_context(|| format!("merging adapter {}", adapter.display()))?;
    out.log(format!(
        "adapter {} merged into its base model {}",
        adapter.display(),
        base.display()
    ));
    if adapter.join("tokenizer.json").is_file() {
        adopt_tokenizer_folder(&mut m, &adapter)?;
    }
    m.source = format!("{} + adapter {}", m.source, adapter.display());
    Ok(m)
}

/// Takes the tokenizer of `dir` (tokenizer.json, tokenizer_config.json, generation_config.json).
pub fn adopt_tokenizer_folder(m: &mut LoadedModel, dir: &Path) -> anyhow::Result<()> {
    m.tokenizer = Some(TokenizerSource::HfJson(dir.join("tokenizer.json")));
    let tc = hf::read_tokenizer_config(dir)?;
    m.chat_template = tc.chat_template.or(m.chat_template.take());
    m.add_bos = tc.add_bos.unwrap_or(m.add_bos);
    m.add_eos = tc.add_eos.unwrap_or(m.add_eos);
    m.bos_token = tc.bos_token.or(m.bos_token.take());
    m.eos_token = tc.eos_token.or(m.eos_token.take());
    if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) {
        if let Ok(g) = serde_json::from_str::<serde_json::Value>(&text) {
            let id = |v: &serde_json::Value| v.as_u64().map(|x| x as u32);
            m.bos_token_id = g.get("bos_token_id").and_then(id).or(m.bos_token_id);
            match g.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => {
                    m.eos_token_ids = a.iter().filter_map(id).collect()
                }
                Some(v) if v.is_u64() => m.eos_token_ids = id(v).into_iter().collect(),
                _ => {}
            }
        }
    }
    Ok(())
}

/// `--tokenizer PATH` as the exported model's tokenizer.
fn override_tokenizer(m: &mut LoadedModel, path: &Path) -> anyhow::Result<()> {
    use crate::inputs::Kind;
    let kind =
        crate::inputs::sniff(path).with_context(|| format!("--tokenizer {}", path.display()))?;
    match kind {
        Kind::TokenizerJson => {
            let dir = path.parent().unwrap_or(Path::new("."));
            adopt_tokenizer_folder(m, dir)?;
            m.tokenizer = Some(TokenizerSource::HfJson(path.to_path_buf()));
        }
        Kind::ModelFolder | Kind::Checkpoint if path.join("tokenizer.json").is_file() => {
            adopt_tokenizer_folder(m, path)?
        }
        Kind::Llama2cTokenizer => {
            m.tokenizer = Some(TokenizerSource::Llama2cBin(path.to_path_buf()));
            m.bos_token_id = Some(1);
            m.eos_token_ids = vec![2];
            m.add_bos = true;
        }
        other => bail!(
            "--tokenizer {} is {}, not a tokenizer (tokenizer.json, tokenizer.bin, or a model folder with tokenizer.json)",
            path.display(),
            other.describe()
        ),
    }
    Ok(())
}

/// Loads an adapter folder (PEFT) or a LoRA checkpoint for a model of shape `cfg`.
pub fn load_any_adapter(path: &Path, cfg: &ModelConfig) -> anyhow::Result<LoraParams> {
    if path.join("trainer_state.json").is_file() {
        let (contents, model, _, _) = open_checkpoint(path)?;
        let CheckpointContents::Adapter(l) = contents else {
            bail!(
                "{}: a full-model checkpoint, not an adapter",
                path.display()
            );
        };
        if &model != cfg {
            bail!(
                "{}: adapter made for a model of another shape",
                path.display()
            );
        }
        return Ok(l);
    }
    Ok(peft::load_adapter(path, cfg)?)
}

/// The tokenizer's vocabulary size, checked against the model's embedding rows.
pub fn check_vocab(
    m: &LoadedModel,
    tokenizer_vocab: Option<usize>,
    out: &Output,
) -> anyhow::Result<()> {
    let v = m.params.config.vocab_size;
    match tokenizer_vocab {
        Some(t) if t > v => bail!(
            "{}: the tokenizer has {t} tokens but the model's embedding has only {v} rows",
            m.path.display()
        ),
        Some(t) if t < v => out.log(format!(
            "note: tokenizer has {t} tokens, model vocab is {v} (padding rows are unused)"
        )),
        _ => {}
    }
    Ok(())
}

/// Vocabulary size of a tokenizer source, where it can be known cheaply.
pub fn tokenizer_vocab(src: &TokenizerSource) -> anyhow::Result<Option<usize>> {
    Ok(match src {
        TokenizerSource::Gguf { tokens, .. } => Some(tokens.len()),
        TokenizerSource::Llama2cBin(p) => Some(llama2c::read_tokenizer(p, None)?.pieces.len()),
        TokenizerSource::HfJson(p) => Some(data::Tokenizer::from_path(p)?.vocab_size()),
    })
}

fn gguf_tokenizer(m: &LoadedModel) -> anyhow::Result<Option<TokenizerSource>> {
    Ok(match &m.tokenizer {
        None => None,
        Some(t @ TokenizerSource::Gguf { .. }) => Some(t.clone()),
        Some(TokenizerSource::HfJson(p)) => {
            let dir = p.parent().unwrap_or(Path::new("."));
            let tc = hf::read_tokenizer_config(dir)?;
            let sp = gguf::hf_tokenizer::Specials {
                bos: m.bos_token_id,
                eos: m.eos_token_ids.first().copied(),
                pad: m.pad_token_id,
                add_bos: Some(m.add_bos),
                add_eos: Some(m.add_eos),
                unk_token: tc.unk_token,
                pre: tc.gguf_pre,
            };
            Some(gguf::hf_tokenizer::from_tokenizer_json(
                p,
                m.params.config.vocab_size,
                &sp,
            )?)
        }
        Some(TokenizerSource::Llama2cBin(p)) => {
            let t = llama2c::read_tokenizer(p, Some(m.params.config.vocab_size))?;
            // llama2.c stores ▁ as a space and BOS/EOS as "\n<s>\n"/"\n</s>\n": undo that.
            let tokens: Vec<String> = t
                .pieces
                .iter()
                .enumerate()
                .map(|(i, p)| match i {
                    0 => "<unk>".to_string(),
                    1 => "<s>".to_string(),
                    2 => "</s>".to_string(),
                    _ => String::from_utf8_lossy(p).replace(' ', "\u{2581}"),
                })
                .collect();
            let types = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| match i {
                    0 => 2,
                    1 | 2 => 3,
                    _ if t.len() == 6 && t.starts_with("<0x") => 6,
                    _ => 1,
                })
                .collect();
            Some(TokenizerSource::Gguf {
                model: "llama".into(),
                pre: None,
                tokens,
                scores: Some(t.scores),
                token_types: Some(types),
                merges: None,
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                pad: None,
                add_bos: Some(true),
                add_eos: Some(false),
            })
        }
    })
}

fn tokenizer_json_for(m: &LoadedModel) -> anyhow::Result<hf::TokenizerJson> {
    Ok(match &m.tokenizer {
        None => hf::TokenizerJson::None,
        Some(TokenizerSource::HfJson(p)) => hf::TokenizerJson::Copy(p.clone()),
        Some(TokenizerSource::Llama2cBin(p)) => {
            hf::TokenizerJson::Text(data::Tokenizer::from_path(p)?.to_tokenizer_json()?)
        }
        // The data crate builds the tokenizer from the GGUF's own metadata.
        Some(TokenizerSource::Gguf { .. }) => {
            hf::TokenizerJson::Text(data::Tokenizer::from_path(&m.path)?.to_tokenizer_json()?)
        }
    })
}

/// Writes `m` as a native (HF) folder with a tokenizer.json converted if needed.
pub fn write_hf(dir: &Path, m: &LoadedModel, dtype: DType, out: &Output) -> anyhow::Result<()> {
    let mut opts = SaveOptions::from_loaded(m, dtype);
    opts.tokenizer_json = match tokenizer_json_for(m) {
        Ok(t) => t,
        Err(e) => {
            out.log(format!("warning: no tokenizer.json written: {e:#}"));
            hf::TokenizerJson::None
        }
    };
    hf::save_model(dir, &m.params, &opts)?;
    Ok(())
}

/// A model target with its storage type, checked before anything is loaded.
enum Target {
    Hf(DType),
    Gguf(GgmlType),
    Ollama(GgmlType),
    Llama2c,
}

/// The GGUF's name inside an `--format ollama` folder.
const OLLAMA_GGUF: &str = "model.gguf";

fn target(args: &Args) -> anyhow::Result<Option<Target>> {
    Ok(Some(match (args.format, args.dtype) {
        (Format::Peft, _) => return Ok(None),
        (Format::Hf, OutDtype::F32) => Target::Hf(DType::F32),
        (Format::Hf, OutDtype::F16) => Target::Hf(DType::F16),
        (Format::Hf, OutDtype::Bf16) => Target::Hf(DType::BF16),
        (Format::Hf, d) => bail!(
            "--dtype {} is for GGUF; a Hugging Face folder takes f32, f16 or bf16",
            d.gguf_type().name().to_lowercase()
        ),
        (Format::Gguf, d) => Target::Gguf(d.gguf_type()),
        (Format::Ollama, d) => Target::Ollama(d.gguf_type()),
        (Format::Llama2c, OutDtype::F32) => Target::Llama2c,
        (Format::Llama2c, _) => bail!("llama2.c export is f32 only (its legacy format)"),
    }))
}

/// `--format peft`: the adapter of a LoRA training checkpoint as a PEFT folder.
fn export_peft(args: &Args, out: &Output) -> anyhow::Result<()> {
    if args.merge.is_some() {
        bail!("--merge makes a full model; use --format hf|gguf|llama2c with it");
    }
    if !args.src.join("trainer_state.json").is_file() {
        bail!(
            "{}: --format peft exports a LoRA training checkpoint (a folder with trainer_state.json); \
             an adapter folder is already in the PEFT layout",
            args.src.display()
        );
    }
    let (c, _, base, _) = open_checkpoint(&args.src)?;
    let CheckpointContents::Adapter(lora) = c else {
        bail!(
            "{}: a full-model checkpoint has no adapter to export",
            args.src.display()
        );
    };
    let name = base.as_ref().map(|b| b.display().to_string());
    peft::save_adapter(&args.out, &lora, name.as_deref())?;
    if let Some(sha) = crate::base_record::recorded_sha256(&args.src)? {
        crate::base_record::write_sidecar(&args.out, base.as_deref(), &sha)?;
    }
    out.log(format!(
        "wrote PEFT adapter {} (rank {}, {} tensors)",
        args.out.display(),
        lora.config.rank,
        lora.layout.tensors.len()
    ));
    out.event(&Event::Info {
        key: "exported".into(),
        value: serde_json::json!({"format": "peft", "path": args.out}),
    });
    Ok(())
}

/// llama2.c's tokenizer.bin: copied from a llama2.c source, else converted from a
/// SentencePiece-style vocabulary (GGUF "llama", or tokenizer.json with byte fallback).
fn write_llama2c_tokenizer(m: &LoadedModel, model_out: &Path, out: &Output) -> anyhow::Result<()> {
    let converted = match &m.tokenizer {
        None => return Ok(()),
        Some(t @ TokenizerSource::Llama2cBin(_)) => Ok(Some(t.clone())),
        Some(_) => gguf_tokenizer(m),
    };
    let tok_path = model_out.with_file_name("tokenizer.bin");
    let made = converted.and_then(|t| match t {
        Some(t) => Ok(Some(llama2c::tokenizer_from_source(&m.path, &t)?)),
        None => Ok(None),
    });
    match made {
        Ok(Some(tb)) => {
            llama2c::write_tokenizer(&tok_path, &tb)?;
            out.log(format!("wrote {}", tok_path.display()));
        }
        Ok(None) => {}
        Err(e) => out.log(format!("warning: no tokenizer.bin: {e:#}")),
    }
    Ok(())
}

/// Writes `m` as a GGUF mostly in `dtype` (per-tensor types: `gguf::mix`).
fn write_gguf(
    path: &Path,
    m: &LoadedModel,
    src: &Path,
    dtype: GgmlType,
    out: &Output,
) -> anyhow::Result<()> {
    let tok = gguf_tokenizer(m)?;
    if tok.is_none() {
        out.log(
            "warning: the model has no tokenizer; the GGUF will carry none (llama.cpp needs one)",
        );
    }
    let name = src.file_stem().and_then(|s| s.to_str()).map(String::from);
    let opts = gguf::WriteOptions {
        dtype,
        tokenizer: tok.as_ref(),
        chat_template: m.chat_template.as_deref(),
        name: name.as_deref(),
    };
    gguf::write(path, &m.params, &opts)?;
    Ok(())
}

/// Every path this export would write, checked before anything is loaded or written.
fn refuse_overwrites(args: &Args) -> anyhow::Result<()> {
    use crate::overwrite::{refuse_existing, refuse_existing_dir};
    match args.format {
        Format::Hf | Format::Peft => refuse_existing_dir(&args.out, args.force, "--out"),
        Format::Gguf => refuse_existing(&args.out, args.force, "--out"),
        Format::Ollama => {
            refuse_existing(
                &args.out.join(OLLAMA_GGUF),
                args.force,
                "--out's model.gguf",
            )?;
            refuse_existing(&args.out.join("Modelfile"), args.force, "--out's Modelfile")
        }
        Format::Llama2c => {
            refuse_existing(&args.out, args.force, "--out")?;
            let tok = args.out.with_file_name("tokenizer.bin");
            refuse_existing(&tok, args.force, "--out's tokenizer.bin")
        }
    }
}

pub fn run(mut args: Args, out: &Output) -> anyhow::Result<()> {
    refuse_overwrites(&args)?;
    let Some(target) = target(&args)? else {
        return export_peft(&args, out);
    };
    let (src, note) = crate::inputs::resolve_model(&args.src, "SRC")?;
    if let Some(n) = note {
        out.log(n);
    }
    args.src = src;
    let mut m = load_any_model(&args.src, out)?;
    if let Some(t) = &args.tokenizer {
        override_tokenizer(&mut m, t)?;
    }
    out.log(format!("loaded {} ({})", args.src.display(), m.source));
    if let Some(a) = &args.merge {
        crate::base_record::check(a, &args.src, BaseChoice::Given, out)?;
        let lora = load_any_adapter(a, &m.params.config)?;
        lora.merge_into(&mut m.params)
            .with_context(|| format!("merging {}", a.display()))?;
        out.log(format!(
            "merged adapter {} (rank {}, scale {})",
            a.display(),
            lora.config.rank,
            lora.config.scale()
        ));
    }
    if let Some(t) = &m.tokenizer {
        match tokenizer_vocab(t) {
            Ok(v) => check_vocab(&m, v, out)?,
            Err(e) => out.log(format!("warning: cannot read the tokenizer: {e:#}")),
        }
    }
    match target {
        Target::Hf(dtype) => write_hf(&args.out, &m, dtype, out)?,
        Target::Gguf(dtype) => write_gguf(&args.out, &m, &args.src, dtype, out)?,
        Target::Ollama(dtype) => {
            // The Modelfile first: an unconvertible template fails before the long write.
            let text = crate::modelfile::modelfile(&crate::modelfile::ModelfileInput {
                from: &format!("./{OLLAMA_GGUF}"),
                chat_template: m.chat_template.as_deref(),
                eos_token: m.eos_token.as_deref(),
                generation_config: m.generation_config.as_ref(),
            })
            .with_context(|| format!("{}: Ollama Modelfile", args.src.display()))?;
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("--out {}", args.out.display()))?;
            write_gguf(&args.out.join(OLLAMA_GGUF), &m, &args.src, dtype, out)?;
            let mf = args.out.join("Modelfile");
            std::fs::write(&mf, text).with_context(|| format!("writing {}", mf.display()))?;
            out.log(format!(
                "wrote {}; load it with: ollama create NAME -f {}",
                mf.display(),
                mf.display()
            ));
        }
        Target::Llama2c => {
            llama2c::write_model(&args.out, &m.params)?;
            write_llama2c_tokenizer(&m, &args.out, out)?;
        }
    }
    out.log(format!("wrote {}", args.out.display()));
    out.event(&Event::Info {
        key: "exported".into(),
        value: serde_json::json!({"format": format!("{:?}", args.format).to_lowercase(), "path": args.out, "params": m.params.data.len()}),
    });
    Ok(())
}
