//! LoRA adapters in the PEFT layout: `adapter_config.json` + `adapter_model.safetensors`
//! (A `[r, in]`, B `[out, r]`, names `base_model.model.model.layers.N.<module>.lora_A.weight`).
//! Our internal RoPE order is the Hugging Face one, so q/k adapters need no permutation.

use crate::error::{FormatError, Result};
use crate::safetensors_io::{self, DType, SafetensorsFile};
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::ModelConfig;
use serde_json::{json, Value};
use std::path::Path;

/// Writes an adapter folder that `peft.PeftModel.from_pretrained` loads.
pub fn save_adapter(dir: &Path, lora: &LoraParams, base_model_name: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let c = &lora.config;
    let modules: Vec<&str> = c
        .targets
        .iter()
        .map(|t| t.module().rsplit('.').next().unwrap_or(t.module()))
        .collect();
    let cfg = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    });
    let path = dir.join("adapter_config.json");
    let text =
        serde_json::to_string_pretty(&cfg).map_err(|e| FormatError::json(&path, "write", e))?;
    std::fs::write(&path, text + "\n").map_err(|e| FormatError::io(&path, e))?;
    let tensors = lora
        .layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), &lora.data[t.range()]))
        .collect();
    safetensors_io::write(&dir.join("adapter_model.safetensors"), tensors, DType::F32)
}

/// The adapter hyperparameters from adapter_config.json (refusing variants we do not run).
pub fn read_adapter_config(path: &Path) -> Result<LoraConfig> {
    let v = crate::hf::read_json(path)?;
    let o = v
        .as_object()
        .ok_or_else(|| FormatError::invalid(path, "adapter_config", "not a JSON object"))?;
    let field = |k: &str| o.get(k).filter(|v| !v.is_null());
    match field("peft_type").and_then(|t| t.as_str()) {
        Some("LORA") => {}
        other => {
            return Err(FormatError::unsupported(
                path,
                "peft_type",
                format!("{other:?} (only LORA)"),
            ))
        }
    }
    for flag in ["use_dora", "use_rslora", "fan_in_fan_out", "use_qalora"] {
        if field(flag).and_then(|b| b.as_bool()).unwrap_or(false) {
            return Err(FormatError::unsupported(
                path,
                flag,
                "true (plain LoRA only)",
            ));
        }
    }
    for pat in ["rank_pattern", "alpha_pattern"] {
        if field(pat)
            .and_then(|p| p.as_object())
            .is_some_and(|m| !m.is_empty())
        {
            return Err(FormatError::unsupported(
                path,
                pat,
                "per-module ranks or alphas",
            ));
        }
    }
    for k in ["layers_to_transform", "modules_to_save"] {
        if field(k).is_some() {
            return Err(FormatError::unsupported(path, k, "must be null"));
        }
    }
    if let Some(b) = field("bias").and_then(|b| b.as_str()) {
        if b != "none" {
            return Err(FormatError::unsupported(
                path,
                "bias",
                format!("\"{b}\" (only none)"),
            ));
        }
    }
    let rank = field("r")
        .and_then(|r| r.as_u64())
        .filter(|&r| r > 0 && r <= 1 << 16)
        .ok_or_else(|| FormatError::invalid(path, "r", "missing or not a positive integer"))?
        as usize;
    let alpha = field("lora_alpha")
        .and_then(|a| a.as_f64())
        .ok_or_else(|| FormatError::invalid(path, "lora_alpha", "missing or not a number"))?;
    let dropout = field("lora_dropout")
        .and_then(|d| d.as_f64())
        .unwrap_or(0.0) as f32;
    let targets = match field("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| {
                m.as_str()
                    .and_then(|s| s.parse::<LoraTarget>().ok())
                    .ok_or_else(|| {
                        FormatError::unsupported(
                            path,
                            "target_modules",
                            format!("{m} (q/k/v/o/gate/up/down _proj)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(FormatError::unsupported(
                path,
                "target_modules",
                format!("{other} (a list of module names)"),
            ))
        }
        None => return Err(FormatError::invalid(path, "target_modules", "missing")),
    };
    Ok(LoraConfig {
        rank,
        alpha,
        targets,
        dropout,
    }
    .normalized())
}

/// Loads a PEFT adapter made for a model of shape `model`.
pub fn load_adapter(dir: &Path, model: &ModelConfig) -> Result<LoraParams> {
    let cfg_path = dir.join("adapter_config.json");
    let lc = read_adapter_config(&cfg_path)?;
    let st_path = dir.join("adapter_model.safetensors");
    let file = SafetensorsFile::open(&st_path)?;
    let mut lora = LoraParams::zeros(model, &lc)
        .map_err(|e| FormatError::invalid(&cfg_path, "adapter", e.to_string()))?;
    let layout = lora.layout.clone();
    for t in &layout.tensors {
        file.read_f32(&t.name, &t.shape, &mut lora.data[t.range()])?;
    }
    for (name, _, _) in file.entries()? {
        if layout.find(&name).is_none() {
            return Err(FormatError::unsupported(
                &st_path,
                &name,
                "tensor outside the LoRA A/B matrices of adapter_config.json",
            ));
        }
    }
    Ok(lora)
}
