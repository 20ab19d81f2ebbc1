//! Tokenizers from a GGUF vocabulary (`tokenizer.ggml.*`), equivalent to llama.cpp's:
//! "llama" = SentencePiece BPE with scores and byte fallback; "gpt2" = byte-level BPE with
//! merges, split first by the `tokenizer.ggml.pre` regex.

use super::gguf_meta::{self, MetaValue};
use super::spm::{parse_byte_piece, PieceKind, SpmModel};
use super::{SpecialConfig, Tokenizer};
use crate::error::{DataError, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The tokenizer part of a GGUF's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "llama" or "gpt2".
    pub model: String,
    /// `tokenizer.ggml.pre` (gpt2 only): "smollm", "llama-bpe", "qwen2", "gpt-2", ...
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

/// Reads the vocabulary from a GGUF file's metadata without loading tensors.
pub fn read_gguf_vocab(path: &Path) -> Result<GgufVocab> {
    let meta = gguf_meta::read(path)?;
    let err = |m: String| DataError::format(path, m);
    let str_of = |k: &str| match meta.get(k) {
        Some(MetaValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let id_of = |k: &str| match meta.get(k) {
        Some(MetaValue::Int(i)) => u32::try_from(*i).ok(),
        _ => None,
    };
    let bool_of = |k: &str| match meta.get(k) {
        Some(MetaValue::Bool(b)) => Some(*b),
        _ => None,
    };
    let model = str_of("tokenizer.ggml.model")
        .ok_or_else(|| err("no tokenizer.ggml.model: this GGUF has no tokenizer".into()))?;
    let tokens = match meta.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Strs(t)) => t.clone(),
        _ => {
            return Err(err(
                "tokenizer.ggml.tokens is missing or not a string array".into(),
            ))
        }
    };
    Ok(GgufVocab {
        model,
        pre: str_of("tokenizer.ggml.pre"),
        tokens,
        scores: match meta.get("tokenizer.ggml.scores") {
            Some(MetaValue::Floats(s)) => Some(s.clone()),
            _ => None,
        },
        token_types: match meta.get("tokenizer.ggml.token_type") {
            Some(MetaValue::Ints(t)) => Some(t.iter().map(|&i| i as i32).collect()),
            _ => None,
        },
        merges: match meta.get("tokenizer.ggml.merges") {
            Some(MetaValue::Strs(m)) => Some(m.clone()),
            _ => None,
        },
        bos: id_of("tokenizer.ggml.bos_token_id"),
        eos: id_of("tokenizer.ggml.eos_token_id"),
        unk: id_of("tokenizer.ggml.unknown_token_id"),
        pad: id_of("tokenizer.ggml.padding_token_id"),
        add_bos: bool_of("tokenizer.ggml.add_bos_token"),
        add_eos: bool_of("tokenizer.ggml.add_eos_token"),
        add_space_prefix: bool_of("tokenizer.ggml.add_space_prefix"),
        chat_template: str_of("tokenizer.chat_template"),
    })
}

pub fn build(v: &GgufVocab) -> Result<Tokenizer> {
    let n = v.tokens.len();
    if n == 0 {
        return Err(DataError::Tokenizer(
            "tokenizer.ggml.tokens is empty".into(),
        ));
    }
    for (name, len) in [
        ("tokenizer.ggml.scores", v.scores.as_ref().map(Vec::len)),
        (
            "tokenizer.ggml.token_type",
            v.token_types.as_ref().map(Vec::len),
        ),
    ] {
        if let Some(len) = len.filter(|&l| l != n) {
            return Err(DataError::Tokenizer(format!(
                "{name} has {len} entries but there are {n} tokens"
            )));
        }
    }
    for (name, id) in [
        ("bos_token_id", v.bos),
        ("eos_token_id", v.eos),
        ("unknown_token_id", v.unk),
        ("padding_token_id", v.pad),
    ] {
        if let Some(id) = id.filter(|&i| i as usize >= n) {
            return Err(DataError::Tokenizer(format!(
                "tokenizer.ggml.{name} {id} is outside the vocabulary of {n}"
            )));
        }
    }
    let cfg = SpecialConfig {
        bos: v.bos,
        eos: v.eos,
        pad: v.pad,
        unk: v.unk,
        add_bos: v.add_bos,
        add_eos: v.add_eos,
        chat_template: v.chat_template.clone(),
    };
    match v.model.as_str() {
        "llama" => build_spm(v, cfg),
        "gpt2" => build_byte_level(v, cfg),
        other => Err(DataError::Tokenizer(format!(
            "tokenizer.ggml.model \"{other}\" is not supported (llama or gpt2)"
        ))),
    }
}

fn kinds(v: &GgufVocab) -> Vec<PieceKind> {
    match &v.token_types {
        Some(t) => t.iter().map(|&c| PieceKind::from_gguf(c)).collect(),
        None => v
            .tokens
            .iter()
            .map(|p| {
                if parse_byte_piece(p).is_some() {
                    PieceKind::Byte
                } else {
                    PieceKind::Normal
                }
            })
            .collect(),
    }
}

fn build_spm(v: &GgufVocab, mut cfg: SpecialConfig) -> Result<Tokenizer> {
    let scores = v.scores.clone().ok_or_else(|| {
        DataError::Tokenizer("tokenizer.ggml.scores is required for a \"llama\" vocabulary".into())
    })?;
    let kinds = kinds(v);
    let unk = v
        .unk
        .or_else(|| {
            kinds
                .iter()
                .position(|k| *k == PieceKind::Unknown)
                .map(|i| i as u32)
        })
        .unwrap_or(0);
    let model = SpmModel::new(
        v.tokens.clone(),
        scores,
        kinds,
        unk,
        v.add_space_prefix.unwrap_or(true),
    )
    .map_err(DataError::Tokenizer)?;
    cfg.add_bos = Some(v.add_bos.unwrap_or(true));
    Ok(Tokenizer::from_spm(model, cfg))
}

/// The split regex llama.cpp uses for a `tokenizer.ggml.pre` value (None = GPT-2's own regex,
/// which the ByteLevel pre-tokenizer applies itself).
fn pre_tokenizer(pre: &str) -> Result<Value> {
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        // "\p{N}" split first, then the GPT-2 regex (llama.cpp's smollm/starcoder group).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]})
        }
        "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]})
        }
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]})
        }
        other => {
            return Err(DataError::Tokenizer(format!(
                "tokenizer.ggml.pre \"{other}\" is not supported (smollm, llama-bpe, qwen2, gpt-2, default, ...)"
            )))
        }
    })
}

/// Builds the BPE through the `tokenizers` API rather than a tokenizer.json document: the
/// JSON route held the vocabulary three times at once (value tree, bytes, parsed model), about
/// 65 MB at peak for a 49k vocabulary, most of `generate`'s memory above the weights.
fn build_byte_level(v: &GgufVocab, cfg: SpecialConfig) -> Result<Tokenizer> {
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper};
    let pre = v.pre.as_deref().unwrap_or("default");
    let merges = v.merges.as_ref().ok_or_else(|| {
        DataError::Tokenizer("tokenizer.ggml.merges is required for a \"gpt2\" vocabulary".into())
    })?;
    let mut vocab = Vocab::with_capacity(v.tokens.len());
    for (id, t) in v.tokens.iter().enumerate() {
        if vocab.insert(t.clone(), id as u32).is_some() {
            return Err(DataError::Tokenizer(format!(
                "token {id} {t:?} appears twice in tokenizer.ggml.tokens"
            )));
        }
    }
    let merge_pairs = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .filter(|(a, b)| vocab.contains_key(*a) && vocab.contains_key(*b))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    DataError::Tokenizer(format!(
                        "tokenizer.ggml.merges[{i}] {m:?} is not two tokens of the vocabulary"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let added: Vec<AddedToken> = kinds(v)
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, PieceKind::Control | PieceKind::UserDefined))
        .map(|(id, k)| {
            AddedToken::from(v.tokens[id].clone(), *k == PieceKind::Control)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
                .normalized(false)
        })
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, merge_pairs)
        .ignore_merges(matches!(pre, "llama-bpe" | "llama3" | "llama-v3"))
        .fuse_unk(false)
        .byte_fallback(false)
        .build()
        .map_err(|e| DataError::Tokenizer(format!("building the byte-level BPE: {e}")))?;
    let pre_tok: PreTokenizerWrapper = component("pre-tokenizer", pre_tokenizer(pre)?)?;
    let post: PostProcessorWrapper = component(
        "post-processor",
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    )?;
    let decoder: DecoderWrapper = component(
        "decoder",
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
    )?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(pre_tok))
        .with_post_processor(Some(post))
        .with_decoder(Some(decoder));
    tok.add_tokens(&added);
    Ok(Tokenizer::from_hf(tok, cfg))
}

/// One small pipeline component (pre-tokenizer, decoder, ...) from its tokenizer.json form.
fn component<T: serde::de::DeserializeOwned>(name: &str, doc: Value) -> Result<T> {
    serde_json::from_value(doc.clone())
        .map_err(|e| DataError::Tokenizer(format!("building the {name} {doc}: {e}")))
}
