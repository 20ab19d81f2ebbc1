//! `neuralforge info PATH [--json]`: facts about a model file or folder, a checkpoint, an
//! adapter, a tokenizer or a dataset, read from headers (weights are not loaded).

use crate::output::Output;
use anyhow::{bail, Context};
use engine::ModelConfig;
use formats::gguf::{self, GgufHeader};
use formats::{hf, llama2c, peft};
use protocol::Event;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder or file (.gguf, llama2.c .bin), checkpoint folder, adapter folder,
    /// tokenizer (tokenizer.json, tokenizer.bin) or dataset folder (manifest.json).
    pub path: PathBuf,
}

/// Ordered facts: printed as `key: value` lines, or one `info` event each with `--json`.
#[derive(Default)]
struct Facts(Vec<(String, Value)>);

impl Facts {
    fn add(&mut self, k: &str, v: impl Into<Value>) {
        self.0.push((k.to_string(), v.into()));
    }
}

/// The model's shape; `architecture` says "llama" (the engine's family) unless a GGUF file
/// names its own (`gguf_facts`).
fn model_facts(f: &mut Facts, c: &ModelConfig) {
    model_facts_of(f, "llama", c)
}

fn model_facts_of(f: &mut Facts, architecture: &str, c: &ModelConfig) {
    f.add("architecture", architecture);
    f.add("dim", c.dim);
    f.add("hidden_dim", c.hidden_dim);
    f.add("layers", c.n_layers);
    f.add("heads", c.n_heads);
    f.add("kv_heads", c.n_kv_heads);
    f.add("head_dim", c.head_dim());
    f.add("vocab", c.vocab_size);
    f.add("context", c.max_seq_len);
    f.add("rope_theta", c.rope_theta);
    f.add("norm_eps", c.norm_eps);
    f.add("tied_embeddings", c.tied_embeddings);
    f.add("qkv_bias", c.qkv_bias);
    f.add("params", c.param_count());
}

fn tokenizer_facts(f: &mut Facts, path: &Path) {
    match data::Tokenizer::from_path(path) {
        Ok(t) => {
            f.add("tokenizer", format!("{:?} ({})", t.kind(), path.display()));
            f.add("tokenizer_vocab", t.vocab_size());
            let name = |id: Option<u32>| {
                id.map(|i| json!({"id": i, "text": t.id_to_piece(i)}))
                    .unwrap_or(Value::Null)
            };
            f.add("bos", name(t.bos_id()));
            f.add("eos", name(t.eos_id()));
            f.add("add_bos", t.add_bos());
        }
        Err(e) => f.add("tokenizer", format!("unreadable: {e}")),
    }
}

/// The read bandwidth the bound in `info` assumes (GB/s): measured by `generate --bench`
/// (f32 decode kernel streaming the weights) on the machine of docs/performance-generate.md.
const REFERENCE_BANDWIDTH_GB_S: f64 = 18.1;

/// Bytes one decoded token reads on the quantized path: every tensor as loaded once (Q2_K
/// and Q3_K in the types they are repacked to), except an untied embedding, of which only
/// one row is read.
fn bytes_per_token(h: &GgufHeader) -> Option<u64> {
    let loaded = gguf::repack::loaded_bytes;
    let all: u64 = h.tensors.iter().map(loaded).sum();
    if h.tensor("output.weight").is_none() {
        return Some(all); // tied: the embedding is the classifier, read in full
    }
    let e = h.tensor("token_embd.weight")?;
    let rows = e.dims.get(1).copied().filter(|&r| r > 0)?;
    Some(all - loaded(e) + loaded(e) / rows)
}

fn gguf_facts(f: &mut Facts, path: &Path) -> anyhow::Result<()> {
    let h: GgufHeader = gguf::read_header(path)?;
    f.add("format", format!("gguf v{}", h.version));
    let s = |k: &str| h.get(k).map(|v| v.describe()).unwrap_or_else(|| "-".into());
    f.add("name", s("general.name"));
    match gguf::model_config(&h).and_then(|c| Ok((gguf::architecture(&h)?, c))) {
        Ok((arch, c)) => model_facts_of(f, arch, &c),
        Err(e) => f.add("model", format!("not loadable: {e}")),
    }
    let mut types: Vec<(String, usize)> = Vec::new();
    for t in &h.tensors {
        let n = t.ggml_type.name().to_string();
        match types.iter_mut().find(|(x, _)| *x == n) {
            Some((_, c)) => *c += 1,
            None => types.push((n, 1)),
        }
    }
    f.add("tensors", h.tensors.len());
    f.add(
        "tensor_types",
        types
            .iter()
            .map(|(t, c)| format!("{t}×{c}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    f.add(
        "tensor_bytes",
        h.tensors.iter().map(|t| t.n_bytes).sum::<u64>(),
    );
    if let Some(per_token) = bytes_per_token(&h) {
        f.add("bytes_per_token", per_token);
        f.add(
            "bandwidth_bound",
            format!(
                "{:.0} tok/s at {REFERENCE_BANDWIDTH_GB_S} GB/s (the read bandwidth `generate --bench` measured on the 2-core Zen 3 machine of docs/performance-generate.md; measure yours with --bench)",
                REFERENCE_BANDWIDTH_GB_S * 1e9 / per_token as f64
            ),
        );
    }
    f.add(
        "tokenizer",
        format!(
            "gguf {} (pre {})",
            s("tokenizer.ggml.model"),
            s("tokenizer.ggml.pre")
        ),
    );
    f.add(
        "tokenizer_vocab",
        h.get("tokenizer.ggml.tokens")
            .and_then(|t| t.as_array())
            .map(|a| a.len())
            .unwrap_or(0),
    );
    f.add(
        "merges",
        h.get("tokenizer.ggml.merges")
            .and_then(|t| t.as_array())
            .map(|a| a.len())
            .unwrap_or(0),
    );
    let tokens = h.get("tokenizer.ggml.tokens").and_then(|t| t.as_array());
    for (k, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("pad", "padding_token_id"),
    ] {
        let id = h
            .get(&format!("tokenizer.ggml.{key}"))
            .and_then(|v| v.as_u64());
        let text = id
            .and_then(|i| tokens.and_then(|t| t.get(i as usize)))
            .and_then(|t| t.as_str());
        f.add(
            k,
            id.map(|i| json!({"id": i, "text": text}))
                .unwrap_or(Value::Null),
        );
    }
    f.add("add_bos", s("tokenizer.ggml.add_bos_token"));
    f.add("chat_template", h.get("tokenizer.chat_template").is_some());
    Ok(())
}

fn hf_facts(f: &mut Facts, dir: &Path) -> anyhow::Result<()> {
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).with_context(|| cfg_path.display().to_string())?;
    let (c, extras) = hf::parse_config(&cfg_path, &text)?;
    f.add("format", "hf folder");
    model_facts(f, &c);
    let single = dir.join("model.safetensors");
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single]
    } else {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        v.sort();
        v
    };
    let mut dtypes: Vec<String> = Vec::new();
    let mut n = 0usize;
    for p in &files {
        for (_, dt, _) in formats::safetensors_io::SafetensorsFile::open(p)?.entries()? {
            n += 1;
            if !dtypes.contains(&dt) {
                dtypes.push(dt);
            }
        }
    }
    f.add("weight_files", files.len());
    f.add("tensors", n);
    f.add("dtype", dtypes.join("+"));
    f.add("bos_token_id", extras.bos_token_id);
    f.add("eos_token_ids", extras.eos_token_ids);
    let tc = hf::read_tokenizer_config(dir)?;
    f.add("chat_template", tc.chat_template.is_some());
    f.add("bos_token", tc.bos_token);
    f.add("eos_token", tc.eos_token);
    let tok = dir.join("tokenizer.json");
    if tok.is_file() {
        tokenizer_facts(f, &tok);
    } else {
        f.add("tokenizer", "none");
    }
    Ok(())
}

fn adapter_facts(f: &mut Facts, dir: &Path) -> anyhow::Result<()> {
    let lc = peft::read_adapter_config(&dir.join("adapter_config.json"))?;
    f.add("format", "peft lora adapter");
    f.add("rank", lc.rank);
    f.add("alpha", lc.alpha);
    f.add("scale", lc.scale());
    f.add(
        "targets",
        lc.targets
            .iter()
            .map(|t| t.short())
            .collect::<Vec<_>>()
            .join(","),
    );
    let st =
        formats::safetensors_io::SafetensorsFile::open(&dir.join("adapter_model.safetensors"))?;
    let entries = st.entries()?;
    f.add("tensors", entries.len());
    f.add(
        "params",
        entries
            .iter()
            .map(|(_, _, s)| s.iter().product::<usize>())
            .sum::<usize>(),
    );
    let layers = entries
        .iter()
        .filter_map(|(n, _, _)| {
            n.split(".layers.")
                .nth(1)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map(|l| l + 1);
    f.add("layers", layers);
    f.add("base_sha256", crate::base_record::recorded_sha256(dir)?);
    Ok(())
}

fn checkpoint_facts(f: &mut Facts, dir: &Path) -> anyhow::Result<()> {
    let (contents, model, base, step) = super::export::open_checkpoint(dir)?;
    f.add("format", "training checkpoint");
    f.add("step", step);
    f.add("base_model", base.map(|b| b.display().to_string()));
    f.add("base_sha256", crate::base_record::recorded_sha256(dir)?);
    match contents {
        super::export::CheckpointContents::Model(_) => f.add("trains", "full model"),
        super::export::CheckpointContents::Adapter(l) => {
            f.add("trains", "lora adapter");
            f.add("rank", l.config.rank);
            f.add("alpha", l.config.alpha);
            f.add(
                "targets",
                l.config
                    .targets
                    .iter()
                    .map(|t| t.short())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            f.add("adapter_params", l.data.len());
        }
    }
    model_facts(f, &model);
    Ok(())
}

fn llama2c_facts(f: &mut Facts, path: &Path) -> anyhow::Result<()> {
    match llama2c::inspect_file(path) {
        Ok(h) => {
            f.add(
                "format",
                format!(
                    "llama2.c v{}{}",
                    h.version,
                    if h.version == 2 { " (Q8_0)" } else { " (f32)" }
                ),
            );
            model_facts(f, &h.config);
            match llama2c::find_tokenizer(path, h.config.vocab_size) {
                Some(t) => tokenizer_facts(f, &t),
                None => f.add("tokenizer", "none next to the model"),
            }
            Ok(())
        }
        Err(model_err) => {
            // Not a model: maybe a tokenizer.bin.
            match llama2c::read_tokenizer(path, None) {
                Ok(t)
                    if t.pieces.len() > 3
                        && t.pieces
                            .iter()
                            .all(|p| p.len() <= t.max_token_length as usize) =>
                {
                    f.add("format", "llama2.c tokenizer.bin");
                    f.add("max_token_length", t.max_token_length);
                    tokenizer_facts(f, path);
                    Ok(())
                }
                _ => Err(model_err.into()),
            }
        }
    }
}

fn dataset_facts(f: &mut Facts, dir: &Path) -> anyhow::Result<()> {
    // Read through the data crate, which checks the shards against the manifest.
    let ds =
        data::dataset::Dataset::open(dir).with_context(|| format!("dataset {}", dir.display()))?;
    let m = &ds.manifest;
    f.add("format", "token dataset");
    f.add("files", m.files.len());
    f.add("tokenizer", m.tokenizer.source.clone());
    f.add("vocab", m.vocab_size);
    f.add("dtype", format!("{:?}", m.dtype).to_lowercase());
    f.add("loss_mask", m.has_mask);
    for (name, split) in [("train", &ds.train), ("val", &ds.val)] {
        f.add(&format!("{name}_documents"), split.num_documents());
        f.add(&format!("{name}_tokens"), split.len());
        f.add(&format!("{name}_trained_tokens"), split.trained_tokens());
    }
    Ok(())
}

fn collect(path: &Path) -> anyhow::Result<Facts> {
    let mut f = Facts::default();
    f.add("path", path.display().to_string());
    if path.is_dir() {
        if path.join("trainer_state.json").is_file() {
            checkpoint_facts(&mut f, path)?;
        } else if path.join("adapter_config.json").is_file() {
            adapter_facts(&mut f, path)?;
        } else if path.join("config.json").is_file() {
            hf_facts(&mut f, path)?;
        } else if path.join("manifest.json").is_file() {
            dataset_facts(&mut f, path)?;
        } else if let Some(c) = formats::checkpoint::open_latest(path)? {
            f.add("checkpoints", formats::checkpoint::list(path)?.len());
            f.add("latest", c.dir.display().to_string());
            checkpoint_facts(&mut f, &c.dir)?;
        } else {
            bail!(
                "{}: no config.json, adapter_config.json, trainer_state.json or manifest.json here",
                path.display()
            );
        }
        return Ok(f);
    }
    let len = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    f.add("file_bytes", len);
    match formats::detect_format(path) {
        Ok(formats::ModelFormat::Gguf) => gguf_facts(&mut f, path)?,
        _ if path.extension().is_some_and(|e| e == "json") => {
            f.add("format", "tokenizer.json");
            tokenizer_facts(&mut f, path);
        }
        Ok(_) => llama2c_facts(&mut f, path)?,
        Err(e) => return Err(e.into()),
    }
    Ok(f)
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    // A run folder is described by the model it would give generate or export.
    let path = if crate::inputs::is_run_folder(&args.path) {
        let (p, note) = crate::inputs::resolve_model(&args.path, "PATH")?;
        if let Some(n) = note {
            out.log(n);
        }
        p
    } else {
        args.path.clone()
    };
    let facts = collect(&path)?;
    for (k, v) in facts.0 {
        if out.json {
            out.event(&Event::Info { key: k, value: v });
        } else {
            let text = match &v {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{k:>16}: {text}");
        }
    }
    Ok(())
}
