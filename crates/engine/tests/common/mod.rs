//! Fixture loading for the engine's tests (the engine itself knows nothing of files).
#![allow(dead_code)]

pub mod quant;

use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::{ModelConfig, Params};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// /work/shared (or $NEURALFORGE_SHARED); None, with a note, when it is missing.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var("NEURALFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: shared data not found");
        None
    }
}

pub fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn config(dir: &Path) -> ModelConfig {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| j[k].as_u64().unwrap() as usize;
    let theta = j["rope_theta"]
        .as_f64()
        .or_else(|| j["rope_parameters"]["rope_theta"].as_f64())
        .unwrap();
    ModelConfig {
        dim: u("hidden_size"),
        hidden_dim: u("intermediate_size"),
        n_layers: u("num_hidden_layers"),
        n_heads: u("num_attention_heads"),
        n_kv_heads: u("num_key_value_heads"),
        vocab_size: u("vocab_size"),
        max_seq_len: u("max_position_embeddings"),
        rope_theta: theta,
        norm_eps: j["rms_norm_eps"].as_f64().unwrap(),
        tied_embeddings: j["tie_word_embeddings"].as_bool().unwrap_or(false),
        qkv_bias: j["attention_bias"].as_bool().unwrap_or(false),
    }
}

pub struct Fixture {
    pub dir: PathBuf,
    pub params: Params,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
    pub expected: serde_json::Value,
}

pub fn load(name: &str) -> Option<Fixture> {
    let dir = shared()?.join("fixtures").join(name);
    let cfg = config(&dir.join("model"));
    let bytes = std::fs::read(dir.join("model/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut params = Params::zeros(&cfg).unwrap();
    let layout = params.layout.clone();
    for t in &layout.tensors {
        params.data[t.range()].copy_from_slice(&f32s(&st, &t.name));
    }
    let bbytes = std::fs::read(dir.join("batch.safetensors")).unwrap();
    let bst = SafeTensors::deserialize(&bbytes).unwrap();
    let tv = bst.tensor("tokens").unwrap();
    let (batch, t1) = (tv.shape()[0], tv.shape()[1]);
    let toks: Vec<u32> = tv
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
        .collect();
    let seq = t1 - 1;
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for b in 0..batch {
        inputs.extend_from_slice(&toks[b * t1..b * t1 + seq]);
        targets.extend_from_slice(&toks[b * t1 + 1..(b + 1) * t1]);
    }
    let expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    Some(Fixture {
        dir,
        params,
        inputs,
        targets,
        batch,
        seq,
        expected,
    })
}

/// An adapter folder (PEFT layout) as LoraParams.
pub fn load_adapter(dir: &Path, cfg: &ModelConfig) -> LoraParams {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    let targets: Vec<LoraTarget> = j["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    let lc = LoraConfig {
        rank: j["r"].as_u64().unwrap() as usize,
        alpha: j["lora_alpha"].as_f64().unwrap(),
        targets,
        dropout: 0.0,
    };
    let mut lp = LoraParams::zeros(cfg, &lc).unwrap();
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let layout = lp.layout.clone();
    for t in &layout.tensors {
        lp.data[t.range()].copy_from_slice(&f32s(&st, &t.name));
    }
    lp
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    num.sqrt() / den.sqrt().max(1e-30)
}
