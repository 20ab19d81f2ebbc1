//! config.json of a Hugging Face LLaMA-family model: reading both rope shapes, writing both.

use crate::error::{FormatError, Result};
use engine::ModelConfig;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Architectures whose tensors and maths match our LLaMA (q/k/v bias allowed).
const KNOWN_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

fn get_usize(file: &Path, obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                FormatError::invalid(file, key, format!("{v} is not a non-negative integer"))
            }),
    }
}

fn req_usize(file: &Path, obj: &Map<String, Value>, key: &str) -> Result<usize> {
    get_usize(file, obj, key)?.ok_or_else(|| FormatError::invalid(file, key, "missing"))
}

fn get_f64(file: &Path, obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| FormatError::invalid(file, key, format!("{v} is not a number"))),
    }
}

fn get_bool(file: &Path, obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| FormatError::invalid(file, key, format!("{v} is not true/false"))),
    }
}

/// Token ids that may be written as one integer or a list.
pub(crate) fn id_list(file: &Path, obj: &Map<String, Value>, key: &str) -> Result<Vec<u32>> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| FormatError::invalid(file, key, format!("{v} is not a token id")))
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// The parts of config.json we use beyond the shape.
#[derive(Debug, Clone, Default)]
pub struct HfExtras {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

/// Parses config.json text into a validated [`ModelConfig`].
pub fn parse_config(file: &Path, text: &str) -> Result<(ModelConfig, HfExtras)> {
    let v: Value = serde_json::from_str(text).map_err(|e| FormatError::json(file, "config", e))?;
    let obj = v
        .as_object()
        .ok_or_else(|| FormatError::invalid(file, "config", "top level is not a JSON object"))?;
    if let Some(t) = obj.get("model_type") {
        let t = t.as_str().unwrap_or("");
        if !KNOWN_TYPES.contains(&t) {
            return Err(FormatError::unsupported(
                file,
                "model_type",
                format!("\"{t}\" (supported: {})", KNOWN_TYPES.join(", ")),
            ));
        }
    }
    if let Some(act) = obj.get("hidden_act").and_then(|a| a.as_str()) {
        if act != "silu" {
            return Err(FormatError::unsupported(
                file,
                "hidden_act",
                format!("\"{act}\" (only silu)"),
            ));
        }
    }
    if get_bool(file, obj, "mlp_bias")?.unwrap_or(false) {
        return Err(FormatError::unsupported(
            file,
            "mlp_bias",
            "true (no MLP biases in our model)",
        ));
    }
    let dim = req_usize(file, obj, "hidden_size")?;
    let n_heads = req_usize(file, obj, "num_attention_heads")?;
    let model_type = obj
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("llama");
    let rope = obj.get("rope_parameters").and_then(|r| r.as_object());
    let rope_theta = match get_f64(file, obj, "rope_theta")? {
        Some(t) => t,
        None => match rope {
            Some(r) => get_f64(file, r, "rope_theta")?.unwrap_or(10000.0),
            None => 10000.0,
        },
    };
    for (key, scaling) in [
        ("rope_scaling", obj.get("rope_scaling")),
        (
            "rope_parameters.rope_type",
            rope.and_then(|r| r.get("rope_type")),
        ),
    ] {
        match scaling {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "default" => {}
            Some(Value::Object(m))
                if m.get("rope_type").and_then(|t| t.as_str()) == Some("default") => {}
            Some(other) => {
                return Err(FormatError::unsupported(
                    file,
                    key,
                    format!("{other} (only plain RoPE)"),
                ))
            }
        }
    }
    let cfg = ModelConfig {
        dim,
        hidden_dim: req_usize(file, obj, "intermediate_size")?,
        n_layers: req_usize(file, obj, "num_hidden_layers")?,
        n_heads,
        n_kv_heads: get_usize(file, obj, "num_key_value_heads")?.unwrap_or(n_heads),
        vocab_size: req_usize(file, obj, "vocab_size")?,
        max_seq_len: get_usize(file, obj, "max_position_embeddings")?.unwrap_or(2048),
        rope_theta,
        norm_eps: get_f64(file, obj, "rms_norm_eps")?.unwrap_or(1e-6),
        tied_embeddings: get_bool(file, obj, "tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: get_bool(file, obj, "attention_bias")?.unwrap_or(model_type == "qwen2"),
    };
    if let Some(hd) = get_usize(file, obj, "head_dim")? {
        if hd.checked_mul(n_heads) != Some(dim) {
            return Err(FormatError::unsupported(
                file,
                "head_dim",
                format!(
                    "{hd} with {n_heads} heads and hidden_size {dim} (must be hidden_size / heads)"
                ),
            ));
        }
    }
    cfg.validate().map_err(|e| FormatError::config(file, e))?;
    let extras = HfExtras {
        bos_token_id: id_list(file, obj, "bos_token_id")?.first().copied(),
        eos_token_ids: id_list(file, obj, "eos_token_id")?,
        pad_token_id: id_list(file, obj, "pad_token_id")?.first().copied(),
    };
    Ok((cfg, extras))
}

/// config.json for `cfg`: LlamaForCausalLM, with the rope theta both at the top level
/// (transformers 4) and in `rope_parameters` (transformers 5).
pub fn config_json(cfg: &ModelConfig, extras: &HfExtras, dtype: &str) -> Value {
    let eos = match extras.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": cfg.qkv_bias,
        "attention_dropout": 0.0,
        "bos_token_id": extras.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": extras.pad_token_id,
        "head_dim": cfg.head_dim(),
        "hidden_act": "silu",
        "hidden_size": cfg.dim,
        "initializer_range": 0.02,
        "intermediate_size": cfg.hidden_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "mlp_bias": false,
        "num_attention_heads": cfg.n_heads,
        "num_hidden_layers": cfg.n_layers,
        "num_key_value_heads": cfg.n_kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": null,
        "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": cfg.tied_embeddings,
        "torch_dtype": dtype,
        "dtype": dtype,
        "use_cache": true,
        "vocab_size": cfg.vocab_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":176,
        "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":512"#;

    fn parse(extra: &str) -> Result<(ModelConfig, HfExtras)> {
        parse_config(Path::new("config.json"), &format!("{BASE}{extra}}}"))
    }

    #[test]
    fn both_rope_shapes_and_defaults() {
        let (c, _) = parse(r#","rope_theta":5000.0"#).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.n_kv_heads, 4);
        assert!(!c.tied_embeddings);
        let (c, _) =
            parse(r#","rope_parameters":{"rope_theta":100000.0,"rope_type":"default"}"#).unwrap();
        assert_eq!(c.rope_theta, 100000.0);
        let (c, e) = parse(r#","eos_token_id":[2,7],"tie_word_embeddings":true"#).unwrap();
        assert!(c.tied_embeddings);
        assert_eq!(e.eos_token_ids, vec![2, 7]);
    }

    #[test]
    fn written_config_reads_back() {
        let (c, e) =
            parse(r#","num_key_value_heads":2,"bos_token_id":1,"eos_token_id":2"#).unwrap();
        let text = config_json(&c, &e, "float32").to_string();
        let (c2, e2) = parse_config(Path::new("c"), &text).unwrap();
        assert_eq!(c, c2);
        assert_eq!(e.eos_token_ids, e2.eos_token_ids);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = parse(r#","num_key_value_heads":3"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_kv_heads"), "{e}");
        let e = parse(r#","rope_scaling":{"rope_type":"llama3","factor":8.0}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope_scaling"), "{e}");
        let e = parse_config(Path::new("config.json"), "{\"hidden_size\": 64,")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
        let e = parse(r#","vocab_size":-1"#).unwrap_err().to_string();
        assert!(e.contains("vocab_size"), "{e}");
        let e = parse(r#","head_dim":8"#).unwrap_err().to_string();
        assert!(e.contains("head_dim"), "{e}");
    }
}
