//! A GGUF vocabulary (`tokenizer.ggml.*`) from a Hugging Face `tokenizer.json`, for GGUF
//! export of models whose tokenizer came as JSON.
//!
//! Byte-level BPE (a `ByteLevel` pre-tokenizer) becomes the "gpt2" kind: tokens by id and the
//! merges as "a b" strings. BPE with `byte_fallback` (SentencePiece converted to JSON) becomes
//! the "llama" kind; SentencePiece merges by piece score, so each merged piece gets the score
//! `-rank` of its merge (the order is what matters), every other piece a lower one.

use crate::error::{FormatError, Result};
use crate::model::TokenizerSource;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// GGUF token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// Special-token facts that live outside tokenizer.json.
#[derive(Debug, Clone, Default)]
pub struct Specials {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// Text of the unknown token when tokenizer.json's model does not name one.
    pub unk_token: Option<String>,
    /// `tokenizer.ggml.pre` for byte-level BPE (llama.cpp picks its split regex by this name).
    pub pre: Option<String>,
}

fn merge_text(path: &Path, i: usize, m: &Value) -> Result<String> {
    match m {
        Value::String(s) => Ok(s.clone()),
        Value::Array(pair) if pair.len() == 2 => match (pair[0].as_str(), pair[1].as_str()) {
            (Some(a), Some(b)) => Ok(format!("{a} {b}")),
            _ => Err(FormatError::invalid(
                path,
                format!("model.merges[{i}]"),
                "not two strings",
            )),
        },
        _ => Err(FormatError::invalid(
            path,
            format!("model.merges[{i}]"),
            "neither \"a b\" nor [a, b]",
        )),
    }
}

/// Converts `tokenizer.json` at `path` (vocabulary padded to `vocab_size` if the model's
/// embedding has more rows than the tokenizer has tokens).
pub fn from_tokenizer_json(
    path: &Path,
    vocab_size: usize,
    sp: &Specials,
) -> Result<TokenizerSource> {
    let v = crate::hf::read_json(path)?;
    let model = v
        .get("model")
        .ok_or_else(|| FormatError::invalid(path, "model", "missing"))?;
    let ty = model.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if ty != "BPE" {
        return Err(FormatError::unsupported(
            path,
            "model.type",
            format!("\"{ty}\" (GGUF export handles BPE tokenizers)"),
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(|m| m.as_object())
        .ok_or_else(|| FormatError::invalid(path, "model.vocab", "missing or not an object"))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut put = |field: &str, id: u64, text: &str| -> Result<()> {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| tokens.get_mut(i))
            .ok_or_else(|| {
                FormatError::invalid(
                    path,
                    field,
                    format!("token id {id} outside the model's {vocab_size} rows"),
                )
            })?;
        *slot = Some(text.to_string());
        Ok(())
    };
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            FormatError::invalid(path, format!("model.vocab.{text}"), "id is not an integer")
        })?;
        put("model.vocab", id, text)?;
    }
    let mut types = vec![NORMAL; vocab_size];
    if let Some(added) = v.get("added_tokens").and_then(|a| a.as_array()) {
        for (i, t) in added.iter().enumerate() {
            let field = format!("added_tokens[{i}]");
            let id = t
                .get("id")
                .and_then(|x| x.as_u64())
                .ok_or_else(|| FormatError::invalid(path, &field, "no id"))?;
            let content = t
                .get("content")
                .and_then(|x| x.as_str())
                .ok_or_else(|| FormatError::invalid(path, &field, "no content"))?;
            put(&field, id, content)?;
            let special = t.get("special").and_then(|x| x.as_bool()).unwrap_or(false);
            types[id as usize] = if special { CONTROL } else { USER_DEFINED };
        }
    }
    let merges = model
        .get("merges")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, m)| merge_text(path, i, m))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    // Padding rows of the embedding without a token get placeholder names, as llama.cpp does.
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = USER_DEFINED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let byte_level = v
        .get("pre_tokenizer")
        .is_some_and(|p| p.to_string().contains("\"ByteLevel\""));
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let unk = model
        .get("unk_token")
        .and_then(|u| u.as_str())
        .or(sp.unk_token.as_deref())
        .and_then(|u| tokens.iter().position(|t| t == u))
        .map(|i| i as u32);
    if byte_level {
        return Ok(TokenizerSource::Gguf {
            model: "gpt2".into(),
            pre: Some(sp.pre.clone().unwrap_or_else(|| "default".into())),
            tokens,
            scores: None,
            token_types: Some(types),
            merges: Some(merges),
            bos: sp.bos,
            eos: sp.eos,
            unk,
            pad: sp.pad,
            add_bos: sp.add_bos,
            add_eos: sp.add_eos,
        });
    }
    if !byte_fallback {
        return Err(FormatError::unsupported(
            path,
            "pre_tokenizer",
            "BPE without ByteLevel pre-tokenizer or byte_fallback has no GGUF equivalent",
        ));
    }
    // SentencePiece-style: scores from merge ranks, byte pieces typed BYTE.
    let index: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let floor = -(merges.len() as f32) - 1.0;
    let mut scores = vec![floor; tokens.len()];
    for (rank, m) in merges.iter().enumerate() {
        let joined: String = m.split(' ').collect();
        if let Some(&id) = index.get(joined.as_str()) {
            if scores[id] == floor {
                scores[id] = -(rank as f32);
            }
        }
    }
    for (i, t) in tokens.iter().enumerate() {
        if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && types[i] == NORMAL {
            types[i] = BYTE;
        }
        if Some(i as u32) == unk {
            types[i] = UNKNOWN;
        }
        if types[i] != NORMAL {
            scores[i] = 0.0;
        }
    }
    Ok(TokenizerSource::Gguf {
        model: "llama".into(),
        pre: None,
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        merges: None,
        bos: sp.bos,
        eos: sp.eos,
        unk,
        pad: sp.pad,
        add_bos: sp.add_bos,
        add_eos: sp.add_eos,
    })
}
