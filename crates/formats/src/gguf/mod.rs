//! GGUF files (llama.cpp, Ollama): reading architectures `llama` and `qwen2` (all common
//! quantizations, dequantized to f32) and writing `llama` (every type we read but Q2_K/Q3_K,
//! chosen per tensor as llama.cpp does: `mix`) with the full tokenizer, chat template and
//! special tokens.

pub mod encode;
pub mod hf_tokenizer;
pub mod mix;
pub mod quant;
pub mod quant_load;
pub mod reader;
pub mod repack;
pub mod writer;

use crate::assemble::{build_params, to_internal_rope};
use crate::error::{FormatError, Result};
use crate::model::{LoadedModel, ModelFormat, TokenizerSource};
use engine::params::names;
use engine::ModelConfig;
pub use quant::GgmlType;
pub use quant_load::{is_quantized_gguf, load_quant_model, QuantLoaded};
pub use reader::{parse_header, GgufHeader, TensorInfo, Value};
use std::path::Path;
pub use writer::{write, WriteOptions};

/// The GGUF tensor name of an internal (Hugging Face) tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        names::EMBED => return Some("token_embd.weight".into()),
        names::FINAL_NORM => return Some("output_norm.weight".into()),
        names::LM_HEAD => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let g = match suffix {
        names::ATTN_NORM => "attn_norm.weight",
        names::FFN_NORM => "ffn_norm.weight",
        names::WQ => "attn_q.weight",
        names::WK => "attn_k.weight",
        names::WV => "attn_v.weight",
        names::WO => "attn_output.weight",
        names::BQ => "attn_q.bias",
        names::BK => "attn_k.bias",
        names::BV => "attn_v.bias",
        names::W_GATE => "ffn_gate.weight",
        names::W_UP => "ffn_up.weight",
        names::W_DOWN => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

fn meta_usize(h: &GgufHeader, key: &str) -> Result<Option<usize>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                FormatError::invalid(
                    &h.path,
                    key,
                    format!("{} is not a non-negative integer", v.describe()),
                )
            }),
    }
}

fn req_usize(h: &GgufHeader, key: &str) -> Result<usize> {
    meta_usize(h, key)?.ok_or_else(|| FormatError::invalid(&h.path, key, "missing"))
}

fn meta_f64(h: &GgufHeader, key: &str) -> Result<Option<f64>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            FormatError::invalid(&h.path, key, format!("{} is not a number", v.describe()))
        }),
    }
}

fn meta_u32(h: &GgufHeader, key: &str) -> Result<Option<u32>> {
    Ok(match meta_usize(h, key)? {
        None => None,
        Some(v) => {
            Some(u32::try_from(v).map_err(|_| FormatError::invalid(&h.path, key, "too large"))?)
        }
    })
}

fn meta_bool(h: &GgufHeader, key: &str) -> Result<Option<bool>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            FormatError::invalid(&h.path, key, format!("{} is not a bool", v.describe()))
        }),
    }
}

fn meta_str<'a>(h: &'a GgufHeader, key: &str) -> Result<Option<&'a str>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| FormatError::invalid(&h.path, key, "not a string")),
    }
}

fn meta_array<T>(
    h: &GgufHeader,
    key: &str,
    conv: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => {
            let a = v
                .as_array()
                .ok_or_else(|| FormatError::invalid(&h.path, key, "not an array"))?;
            a.iter()
                .enumerate()
                .map(|(i, x)| {
                    conv(x).ok_or_else(|| {
                        FormatError::invalid(
                            &h.path,
                            format!("{key}[{i}]"),
                            format!("unexpected value {}", x.describe()),
                        )
                    })
                })
                .collect::<Result<Vec<T>>>()
                .map(Some)
        }
    }
}

/// The architectures we read: LLaMA, and Qwen2 (LLaMA with q/k/v biases). Their metadata
/// keys are prefixed with the name.
const ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// The file's `general.architecture`, if it is one we read.
pub fn architecture(h: &GgufHeader) -> Result<&'static str> {
    let arch = meta_str(h, "general.architecture")?
        .ok_or_else(|| FormatError::invalid(&h.path, "general.architecture", "missing"))?;
    ARCHITECTURES
        .into_iter()
        .find(|a| *a == arch)
        .ok_or_else(|| {
            FormatError::unsupported(
                &h.path,
                "general.architecture",
                format!("\"{arch}\" (only {})", ARCHITECTURES.join(", ")),
            )
        })
}

/// Whether the file stores q/k rows in the interleaved RoPE order. llama.cpp's converter
/// permutes them for `llama` (its "normal" RoPE); `qwen2` files keep the Hugging Face order
/// (rotate-half, llama.cpp's NEOX RoPE), which is ours.
pub fn rope_rows_interleaved(h: &GgufHeader) -> Result<bool> {
    Ok(architecture(h)? == "llama")
}

/// The model shape from `<arch>.*` metadata, checked against the tensors.
pub fn model_config(h: &GgufHeader) -> Result<ModelConfig> {
    let arch = architecture(h)?;
    let key = |k: &str| format!("{arch}.{k}");
    if let Some(t) = meta_str(h, &key("rope.scaling.type"))? {
        if t != "none" {
            return Err(FormatError::unsupported(
                &h.path,
                key("rope.scaling.type"),
                format!("\"{t}\" (only plain RoPE)"),
            ));
        }
    }
    let dim = req_usize(h, &key("embedding_length"))?;
    let n_heads = req_usize(h, &key("attention.head_count"))?;
    let embd = h
        .tensor("token_embd.weight")
        .ok_or_else(|| FormatError::invalid(&h.path, "token_embd.weight", "tensor missing"))?;
    let vocab = match meta_usize(h, &key("vocab_size"))? {
        Some(v) => v,
        None => embd.dims.get(1).copied().unwrap_or(0) as usize,
    };
    let cfg = ModelConfig {
        dim,
        hidden_dim: req_usize(h, &key("feed_forward_length"))?,
        n_layers: req_usize(h, &key("block_count"))?,
        n_heads,
        n_kv_heads: meta_usize(h, &key("attention.head_count_kv"))?.unwrap_or(n_heads),
        vocab_size: vocab,
        max_seq_len: meta_usize(h, &key("context_length"))?.unwrap_or(2048),
        rope_theta: meta_f64(h, &key("rope.freq_base"))?.unwrap_or(10000.0),
        norm_eps: meta_f64(h, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        tied_embeddings: h.tensor("output.weight").is_none(),
        qkv_bias: h.tensor("blk.0.attn_q.bias").is_some(),
    };
    cfg.validate()
        .map_err(|e| FormatError::config(&h.path, e))?;
    if let Some(rd) = meta_usize(h, &key("rope.dimension_count"))? {
        if rd != cfg.head_dim() {
            return Err(FormatError::unsupported(
                &h.path,
                key("rope.dimension_count"),
                format!("{rd} (partial rotary; head dim is {})", cfg.head_dim()),
            ));
        }
    }
    if let Some(tokens) = h.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()) {
        if tokens.len() != cfg.vocab_size {
            return Err(FormatError::invalid(
                &h.path,
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens but the embedding has {} rows",
                    tokens.len(),
                    cfg.vocab_size
                ),
            ));
        }
    }
    Ok(cfg)
}

/// The raw tokenizer (`tokenizer.ggml.*`), if the file has one.
pub fn tokenizer(h: &GgufHeader) -> Result<Option<TokenizerSource>> {
    let Some(model) = meta_str(h, "tokenizer.ggml.model")? else {
        return Ok(None);
    };
    let tokens = meta_array(h, "tokenizer.ggml.tokens", |v| v.as_str().map(String::from))?
        .ok_or_else(|| FormatError::invalid(&h.path, "tokenizer.ggml.tokens", "missing"))?;
    let n = tokens.len();
    let scores = meta_array(h, "tokenizer.ggml.scores", |v| v.as_f64().map(|x| x as f32))?;
    let token_types = meta_array(h, "tokenizer.ggml.token_type", |v| {
        v.as_i64().and_then(|x| i32::try_from(x).ok())
    })?;
    for (key, len) in [
        ("tokenizer.ggml.scores", scores.as_ref().map(|s| s.len())),
        (
            "tokenizer.ggml.token_type",
            token_types.as_ref().map(|s| s.len()),
        ),
    ] {
        if let Some(len) = len {
            if len != n {
                return Err(FormatError::invalid(
                    &h.path,
                    key,
                    format!("{len} entries for {n} tokens"),
                ));
            }
        }
    }
    let id = |key: &str| -> Result<Option<u32>> {
        match meta_u32(h, key)? {
            Some(i) if i as usize >= n => Err(FormatError::invalid(
                &h.path,
                key,
                format!("id {i} outside the {n} tokens"),
            )),
            other => Ok(other),
        }
    };
    Ok(Some(TokenizerSource::Gguf {
        model: model.to_string(),
        pre: meta_str(h, "tokenizer.ggml.pre")?.map(String::from),
        tokens,
        scores,
        token_types,
        merges: meta_array(h, "tokenizer.ggml.merges", |v| v.as_str().map(String::from))?,
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
        add_bos: meta_bool(h, "tokenizer.ggml.add_bos_token")?,
        add_eos: meta_bool(h, "tokenizer.ggml.add_eos_token")?,
    }))
}

/// "Q4_1 (+F32)": the most common tensor type first.
fn type_summary(h: &GgufHeader) -> String {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in &h.tensors {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
            Some((_, c)) => *c += 1,
            None => counts.push((t.ggml_type, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut s = counts
        .first()
        .map(|c| c.0.name().to_string())
        .unwrap_or_default();
    for (t, _) in counts.iter().skip(1) {
        s.push_str(&format!(" +{}", t.name()));
    }
    s
}

/// The GGUF tensor of internal tensor `name`, its dims checked against `shape` (`[out, in]`).
pub(crate) fn find_tensor<'h>(
    path: &Path,
    h: &'h GgufHeader,
    name: &str,
    shape: &[usize],
) -> Result<&'h TensorInfo> {
    let gname = gguf_name(name).ok_or_else(|| FormatError::invalid(path, name, "no GGUF name"))?;
    let t = h
        .tensor(&gname)
        .ok_or_else(|| FormatError::invalid(path, &gname, "tensor missing"))?;
    // GGUF lists dims innermost first: [in, out] for a [out, in] matrix.
    let want: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
    if t.dims != want {
        return Err(FormatError::invalid(
            path,
            &gname,
            format!("dims {:?}, expected {:?} from the metadata", t.dims, want),
        ));
    }
    Ok(t)
}

/// Parses a whole GGUF file already in memory into a model.
pub fn parse_model(path: &Path, b: &[u8]) -> Result<LoadedModel> {
    let h = parse_header(path, b)?;
    let cfg = model_config(&h)?;
    let interleaved = rope_rows_interleaved(&h)?;
    let find = |name: &str, shape: &[usize]| find_tensor(path, &h, name, shape);
    let params = build_params(
        path,
        &cfg,
        |name, shape| find(name, shape).map(|_| ()),
        |name, shape, out| {
            let t = find(name, shape)?;
            reader::read_tensor_f32(&h, b, t, out)?;
            if interleaved {
                to_internal_rope(name, shape, &cfg, out);
            }
            Ok(())
        },
    )?;
    with_metadata(path, &h, params)
}

/// A model's tokenizer, special tokens and chat template from the header, around `params`.
pub(crate) fn with_metadata(
    path: &Path,
    h: &GgufHeader,
    params: engine::Params,
) -> Result<LoadedModel> {
    let cfg = params.config.clone();
    let tokenizer = tokenizer(h)?;
    let (bos, eos, pad, add_bos, add_eos, bos_t, eos_t) = match &tokenizer {
        Some(TokenizerSource::Gguf {
            model,
            tokens,
            bos,
            eos,
            pad,
            add_bos,
            add_eos,
            ..
        }) => {
            let text = |id: &Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
            (
                *bos,
                *eos,
                *pad,
                add_bos.unwrap_or(model == "llama"),
                add_eos.unwrap_or(false),
                text(bos),
                text(eos),
            )
        }
        _ => (None, None, None, false, false, None, None),
    };
    let mut eos_ids: Vec<u32> = eos.into_iter().collect();
    if let Some(eot) = meta_u32(h, "tokenizer.ggml.eot_token_id")? {
        if !eos_ids.contains(&eot) && (eot as usize) < cfg.vocab_size {
            eos_ids.push(eot);
        }
    }
    Ok(LoadedModel {
        params,
        tokenizer,
        chat_template: meta_str(h, "tokenizer.chat_template")?.map(String::from),
        bos_token_id: bos,
        eos_token_ids: eos_ids,
        pad_token_id: pad,
        add_bos,
        add_eos,
        bos_token: bos_t,
        eos_token: eos_t,
        generation_config: None,
        format: ModelFormat::Gguf,
        source: format!("gguf v{} {}", h.version, type_summary(h)),
        path: path.to_path_buf(),
    })
}

/// Memory-maps a GGUF file.
pub fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if len < 24 {
        return Err(FormatError::invalid(
            path,
            "header",
            format!("file is {len} bytes, too short for GGUF"),
        ));
    }
    // SAFETY: read-only map of a regular file.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))
}

/// Reads only the header of a GGUF file (for `info`).
pub fn read_header(path: &Path) -> Result<GgufHeader> {
    let map = map_file(path)?;
    parse_header(path, &map)
}

/// Loads a GGUF model (memory-mapped; tensors dequantized to f32).
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let map = map_file(path)?;
    parse_model(path, &map)
}
