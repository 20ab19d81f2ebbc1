//! Hugging Face `tokenizer.json` + `tokenizer_config.json` (special tokens, add_bos, chat
//! template).

use super::{SpecialConfig, Tokenizer};
use crate::error::{DataError, Result};
use serde_json::Value;
use std::path::Path;

pub fn load_json(path: &Path, bytes: &[u8]) -> Result<Tokenizer> {
    let tok = tokenizers::Tokenizer::from_bytes(bytes)
        .map_err(|e| DataError::format(path, format!("not a usable tokenizer.json: {e}")))?;
    let config_path = path.with_file_name("tokenizer_config.json");
    let config: Option<Value> = if config_path.is_file() {
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| DataError::io(&config_path, e))?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| DataError::format(&config_path, format!("invalid JSON: {e}")))?,
        )
    } else {
        None
    };
    let mut cfg = special_config(&tok, config.as_ref());
    if cfg.chat_template.is_none() {
        // Newer exports keep the template in its own file.
        let jinja = path.with_file_name("chat_template.jinja");
        if jinja.is_file() {
            cfg.chat_template =
                Some(std::fs::read_to_string(&jinja).map_err(|e| DataError::io(&jinja, e))?);
        }
    }
    Ok(Tokenizer::from_hf(tok, cfg))
}

/// Reads special tokens from `tokenizer_config.json`, falling back to well-known token names
/// and to what the tokenizer's post-processor adds.
pub fn special_config(tok: &tokenizers::Tokenizer, config: Option<&Value>) -> SpecialConfig {
    let token_id = |key: &str| -> Option<u32> {
        let v = config?.get(key)?;
        let content = match v {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("content")?.as_str()?,
            _ => return None,
        };
        tok.token_to_id(content)
    };
    let first_known = |names: &[&str]| names.iter().find_map(|n| tok.token_to_id(n));
    let bos = token_id("bos_token")
        .or_else(|| first_known(&["<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"]));
    let eos = token_id("eos_token").or_else(|| {
        first_known(&[
            "</s>",
            "<|end_of_text|>",
            "<|endoftext|>",
            "<eos>",
            "<|im_end|>",
        ])
    });
    let flag = |key: &str| config.and_then(|c| c.get(key)).and_then(Value::as_bool);
    // Without an explicit flag, BOS is added when the post-processor adds it.
    let add_bos = flag("add_bos_token").or_else(|| {
        let b = bos?;
        let enc = tok.encode_fast("a", true).ok()?;
        Some(enc.get_ids().first() == Some(&b))
    });
    SpecialConfig {
        bos,
        eos,
        pad: token_id("pad_token"),
        unk: token_id("unk_token"),
        add_bos,
        add_eos: flag("add_eos_token"),
        chat_template: config.and_then(|c| chat_template(c.get("chat_template")?)),
    }
}

/// `chat_template` is a string, or a list of `{name, template}` (take "default").
fn chat_template(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let named = |name: &str| {
                items.iter().find_map(|i| {
                    (i.get("name")?.as_str()? == name)
                        .then(|| i.get("template")?.as_str().map(str::to_string))
                        .flatten()
                })
            };
            named("default").or_else(|| {
                items
                    .first()
                    .and_then(|i| i.get("template")?.as_str().map(str::to_string))
            })
        }
        _ => None,
    }
}
