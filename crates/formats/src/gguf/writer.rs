//! GGUF v3 writer: llama architecture metadata, the full tokenizer, chat template, special
//! tokens, and tensors in any type we encode, chosen per tensor as llama.cpp does (`mix`).

use super::quant::{quantize, GgmlType};
use super::reader::Value;
use crate::assemble::to_file_rope;
use crate::error::{FormatError, Result};
use crate::model::TokenizerSource;
use engine::Params;
use std::io::{BufWriter, Write};
use std::path::Path;

const ALIGN: u64 = 32;

/// What goes into a GGUF besides the weights.
#[derive(Debug, Clone)]
pub struct WriteOptions<'a> {
    /// The file's main type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, or Q4_K/Q5_K
    /// (llama.cpp's Q4_K_M/Q5_K_M mixes), Q6_K. Per-tensor choices: `mix::tensor_type`.
    pub dtype: GgmlType,
    /// Must be the `Gguf` kind (convert other kinds first, see `hf_tokenizer`).
    pub tokenizer: Option<&'a TokenizerSource>,
    pub chat_template: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            let elem = a.first().map(type_id).unwrap_or(8);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| put_value(out, x));
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn u32v(file: &Path, field: &str, x: usize) -> Result<Value> {
    u32::try_from(x)
        .map(Value::U32)
        .map_err(|_| FormatError::unsupported(file, field, "does not fit in uint32"))
}

/// The metadata key-value pairs of a model.
fn metadata(path: &Path, params: &Params, opts: &WriteOptions) -> Result<Vec<(String, Value)>> {
    let c = &params.config;
    let file_type = super::mix::file_type(opts.dtype);
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String(opts.name.unwrap_or("neuralforge").into()),
        ),
        ("general.file_type".into(), Value::U32(file_type)),
        ("general.alignment".into(), Value::U32(ALIGN as u32)),
        (
            "llama.context_length".into(),
            u32v(path, "llama.context_length", c.max_seq_len)?,
        ),
        (
            "llama.embedding_length".into(),
            u32v(path, "llama.embedding_length", c.dim)?,
        ),
        (
            "llama.block_count".into(),
            u32v(path, "llama.block_count", c.n_layers)?,
        ),
        (
            "llama.feed_forward_length".into(),
            u32v(path, "llama.feed_forward_length", c.hidden_dim)?,
        ),
        (
            "llama.attention.head_count".into(),
            u32v(path, "llama.attention.head_count", c.n_heads)?,
        ),
        (
            "llama.attention.head_count_kv".into(),
            u32v(path, "llama.attention.head_count_kv", c.n_kv_heads)?,
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        (
            "llama.rope.dimension_count".into(),
            u32v(path, "llama.rope.dimension_count", c.head_dim())?,
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.norm_eps as f32),
        ),
        (
            "llama.vocab_size".into(),
            u32v(path, "llama.vocab_size", c.vocab_size)?,
        ),
    ];
    match opts.tokenizer {
        None => {}
        Some(TokenizerSource::Gguf {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
        }) => {
            if tokens.len() != c.vocab_size {
                return Err(FormatError::invalid(
                    path,
                    "tokenizer.ggml.tokens",
                    format!(
                        "the tokenizer has {} tokens but the model's vocab_size is {}",
                        tokens.len(),
                        c.vocab_size
                    ),
                ));
            }
            kv.push(("tokenizer.ggml.model".into(), Value::String(model.clone())));
            if let Some(p) = pre {
                kv.push(("tokenizer.ggml.pre".into(), Value::String(p.clone())));
            }
            kv.push((
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
            ));
            if let Some(s) = scores {
                kv.push((
                    "tokenizer.ggml.scores".into(),
                    Value::Array(s.iter().map(|x| Value::F32(*x)).collect()),
                ));
            }
            if let Some(t) = token_types {
                kv.push((
                    "tokenizer.ggml.token_type".into(),
                    Value::Array(t.iter().map(|x| Value::I32(*x)).collect()),
                ));
            }
            if let Some(m) = merges {
                kv.push((
                    "tokenizer.ggml.merges".into(),
                    Value::Array(m.iter().map(|x| Value::String(x.clone())).collect()),
                ));
            }
            for (key, id) in [
                ("bos_token_id", bos),
                ("eos_token_id", eos),
                ("unknown_token_id", unk),
                ("padding_token_id", pad),
            ] {
                if let Some(id) = id {
                    kv.push((format!("tokenizer.ggml.{key}"), Value::U32(*id)));
                }
            }
            for (key, b) in [("add_bos_token", add_bos), ("add_eos_token", add_eos)] {
                if let Some(b) = b {
                    kv.push((format!("tokenizer.ggml.{key}"), Value::Bool(*b)));
                }
            }
        }
        Some(other) => {
            return Err(FormatError::unsupported(
                path,
                "tokenizer",
                format!(
                    "{} must be converted to a GGUF vocabulary first (gguf::hf_tokenizer)",
                    other.kind()
                ),
            ))
        }
    }
    if let Some(t) = opts.chat_template {
        kv.push(("tokenizer.chat_template".into(), Value::String(t.into())));
    }
    Ok(kv)
}

/// Writes `params` as a GGUF v3 file llama.cpp can load.
pub fn write(path: &Path, params: &Params, opts: &WriteOptions) -> Result<()> {
    let kv = metadata(path, params, opts)?;
    let cfg = &params.config;
    // Tensor data, in layout order, each padded to the alignment.
    struct Out {
        name: String,
        dims: Vec<u64>,
        ty: GgmlType,
        bytes: Vec<u8>,
        offset: u64,
    }
    let mut tensors = Vec::new();
    let mut offset = 0u64;
    for spec in &params.layout.tensors {
        let name = super::gguf_name(&spec.name).ok_or_else(|| {
            FormatError::invalid(path, &spec.name, "no GGUF name for this tensor")
        })?;
        let data = to_file_rope(&spec.name, &spec.shape, cfg, &params.data[spec.range()]);
        let slot = super::mix::Slot {
            name: &name,
            n_dims: spec.shape.len(),
            cols: *spec.shape.last().unwrap_or(&1),
            n_layers: cfg.n_layers,
            tied: cfg.tied_embeddings,
        };
        let ty = super::mix::tensor_type(opts.dtype, &slot);
        let bytes = quantize(ty, &data)
            .ok_or_else(|| FormatError::invalid(path, &name, "cannot quantize"))?;
        let dims = spec.shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push(Out {
            name,
            dims,
            ty,
            offset,
            bytes,
        });
        let len = tensors.last().map(|t| t.bytes.len() as u64).unwrap_or(0);
        offset += len.div_ceil(ALIGN) * ALIGN;
    }
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in &kv {
        put_str(&mut head, k);
        head.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut head, v);
    }
    for t in &tensors {
        put_str(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims
            .iter()
            .for_each(|d| head.extend_from_slice(&d.to_le_bytes()));
        head.extend_from_slice(&t.ty.id().to_le_bytes());
        head.extend_from_slice(&t.offset.to_le_bytes());
    }
    let pad = (head.len() as u64).div_ceil(ALIGN) * ALIGN - head.len() as u64;
    head.extend(std::iter::repeat_n(0u8, pad as usize));
    let file = std::fs::File::create(path).map_err(|e| FormatError::io(path, e))?;
    let mut w = BufWriter::new(file);
    let io = |e| FormatError::io(path, e);
    w.write_all(&head).map_err(io)?;
    for t in &tensors {
        w.write_all(&t.bytes).map_err(io)?;
        let pad = (t.bytes.len() as u64).div_ceil(ALIGN) * ALIGN - t.bytes.len() as u64;
        w.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    w.flush().map_err(io)
}
