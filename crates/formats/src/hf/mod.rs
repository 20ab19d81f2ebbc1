//! Hugging Face model folders: our native format (config.json, model.safetensors,
//! tokenizer.json, tokenizer_config.json, generation_config.json).

pub mod config;

use crate::assemble::build_params;
use crate::error::{FormatError, Result};
use crate::model::{LoadedModel, ModelFormat, TokenizerSource};
use crate::safetensors_io::{self, DType, SafetensorsFile};
pub use config::{config_json, parse_config, HfExtras};
use engine::Params;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Bigger JSON side files than this are not a model's config (guards `read_to_string`).
const MAX_JSON_BYTES: u64 = 64 << 20;

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let len = std::fs::metadata(path)
        .map_err(|e| FormatError::io(path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(FormatError::invalid(
            path,
            "size",
            format!("{len} bytes is too large for a JSON side file"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| FormatError::json(path, "file", e))
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The weights of a folder: one `model.safetensors` or shards listed by the index file.
struct Shards {
    files: Vec<SafetensorsFile>,
    /// tensor name -> index into `files` (sharded case only).
    map: Option<HashMap<String, usize>>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Shards> {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Ok(Shards {
                files: vec![SafetensorsFile::open(&single)?],
                map: None,
            });
        }
        let index = dir.join("model.safetensors.index.json");
        if !index.is_file() {
            return Err(FormatError::invalid(
                dir,
                "model.safetensors",
                "neither model.safetensors nor model.safetensors.index.json is present",
            ));
        }
        let v = read_json(&index)?;
        let wm = v
            .get("weight_map")
            .and_then(|w| w.as_object())
            .ok_or_else(|| {
                FormatError::invalid(&index, "weight_map", "missing or not an object")
            })?;
        let mut names: Vec<String> = Vec::new();
        let mut map = HashMap::new();
        for (tensor, file) in wm {
            let file = file.as_str().ok_or_else(|| {
                FormatError::invalid(&index, format!("weight_map.{tensor}"), "not a file name")
            })?;
            // Shards must sit in the folder itself: no paths that climb out of it.
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(FormatError::invalid(
                    &index,
                    format!("weight_map.{tensor}"),
                    format!("bad shard name {file:?}"),
                ));
            }
            let i = match names.iter().position(|n| n == file) {
                Some(i) => i,
                None => {
                    names.push(file.to_string());
                    names.len() - 1
                }
            };
            map.insert(tensor.clone(), i);
        }
        let files = names
            .iter()
            .map(|n| SafetensorsFile::open(&dir.join(n)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Shards {
            files,
            map: Some(map),
        })
    }

    fn file_of(&self, name: &str) -> Option<&SafetensorsFile> {
        match &self.map {
            None => self.files.first(),
            Some(m) => m.get(name).and_then(|&i| self.files.get(i)),
        }
    }

    fn dtypes(&self) -> Result<Vec<String>> {
        let mut d = Vec::new();
        for f in &self.files {
            for (_, dt, _) in f.entries()? {
                if !d.contains(&dt) {
                    d.push(dt);
                }
            }
        }
        Ok(d)
    }
}

/// Special-token facts from tokenizer_config.json (and chat_template.jinja).
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    pub chat_template: Option<String>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    /// The GGUF pre-tokenizer name recorded when the model was imported from a GGUF.
    pub gguf_pre: Option<String>,
}

fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// Reads tokenizer_config.json and chat_template.jinja of `dir` (both optional).
pub fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig> {
    let path = dir.join("tokenizer_config.json");
    let mut tc = TokenizerConfig::default();
    if let Some(v) = read_json_opt(&path)? {
        let obj = v
            .as_object()
            .ok_or_else(|| FormatError::invalid(&path, "tokenizer_config", "not a JSON object"))?;
        tc.chat_template = match obj.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // Older files hold a list of named templates; "default" is the one to use.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or(list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            Some(other) => {
                return Err(FormatError::invalid(
                    &path,
                    "chat_template",
                    format!("unexpected value {other}"),
                ))
            }
        };
        tc.add_bos = obj.get("add_bos_token").and_then(|b| b.as_bool());
        tc.add_eos = obj.get("add_eos_token").and_then(|b| b.as_bool());
        tc.bos_token = token_text(obj.get("bos_token"));
        tc.eos_token = token_text(obj.get("eos_token"));
        tc.unk_token = token_text(obj.get("unk_token"));
        tc.gguf_pre = obj
            .get("gguf_pre")
            .and_then(|p| p.as_str())
            .map(String::from);
    }
    let jinja = dir.join("chat_template.jinja");
    if tc.chat_template.is_none() && jinja.is_file() {
        tc.chat_template =
            Some(std::fs::read_to_string(&jinja).map_err(|e| FormatError::io(&jinja, e))?);
    }
    Ok(tc)
}

/// Whether tokenizer.json's post-processor puts a special token first (i.e. adds BOS).
fn tokenizer_json_adds_bos(path: &Path) -> bool {
    let Ok(v) = read_json(path) else { return false };
    v.pointer("/post_processor/single/0/SpecialToken").is_some()
}

/// Loads a Hugging Face model folder.
pub fn load_model(dir: &Path) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| FormatError::io(&cfg_path, e))?;
    let (cfg, extras) = parse_config(&cfg_path, &text)?;
    let shards = Shards::open(dir)?;
    let file_of = |name: &str| {
        shards.file_of(name).ok_or_else(|| {
            FormatError::invalid(
                dir,
                name,
                "tensor missing from model.safetensors.index.json",
            )
        })
    };
    let params = build_params(
        dir,
        &cfg,
        |name, shape| file_of(name)?.check_shape(name, shape),
        |name, shape, out| file_of(name)?.read_f32(name, shape, out),
    )?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = tok_path
        .is_file()
        .then(|| TokenizerSource::HfJson(tok_path.clone()));
    let tc = read_tokenizer_config(dir)?;
    let generation_config = read_json_opt(&dir.join("generation_config.json"))?;
    let mut eos = extras.eos_token_ids.clone();
    if let Some(g) = generation_config.as_ref().and_then(|g| g.as_object()) {
        let gpath = dir.join("generation_config.json");
        for id in config::id_list(&gpath, g, "eos_token_id")? {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
    }
    let add_bos = tc
        .add_bos
        .unwrap_or_else(|| tokenizer.is_some() && tokenizer_json_adds_bos(&tok_path));
    Ok(LoadedModel {
        params,
        tokenizer,
        chat_template: tc.chat_template,
        bos_token_id: extras.bos_token_id,
        eos_token_ids: eos,
        pad_token_id: extras.pad_token_id,
        add_bos,
        add_eos: tc.add_eos.unwrap_or(false),
        bos_token: tc.bos_token,
        eos_token: tc.eos_token,
        generation_config,
        format: ModelFormat::Hf,
        source: format!("hf safetensors {}", shards.dtypes()?.join("+")),
        path: dir.to_path_buf(),
    })
}

/// The tokenizer.json to put in a saved folder.
#[derive(Debug, Clone, Default)]
pub enum TokenizerJson {
    #[default]
    None,
    /// Copy this file.
    Copy(PathBuf),
    /// Write this text (e.g. converted from a GGUF vocabulary by the `data` crate).
    Text(String),
}

/// Everything besides the weights that a saved folder carries.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub dtype: DType,
    pub tokenizer_json: TokenizerJson,
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// Written as is when present; otherwise a minimal one from the token ids.
    pub generation_config: Option<Value>,
    pub unk_token: Option<String>,
    /// Recorded in tokenizer_config.json so a later GGUF export can name the pre-tokenizer.
    pub gguf_pre: Option<String>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            dtype: DType::F32,
            tokenizer_json: TokenizerJson::None,
            chat_template: None,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
            bos_token: None,
            eos_token: None,
            add_bos: None,
            add_eos: None,
            generation_config: None,
            unk_token: None,
            gguf_pre: None,
        }
    }
}

impl SaveOptions {
    /// Options that carry over everything `m` knows (a tokenizer.json is copied when the
    /// model came with one; other tokenizer kinds need converting by the caller).
    pub fn from_loaded(m: &LoadedModel, dtype: DType) -> SaveOptions {
        SaveOptions {
            dtype,
            tokenizer_json: match &m.tokenizer {
                Some(TokenizerSource::HfJson(p)) => TokenizerJson::Copy(p.clone()),
                _ => TokenizerJson::None,
            },
            chat_template: m.chat_template.clone(),
            bos_token_id: m.bos_token_id,
            eos_token_ids: m.eos_token_ids.clone(),
            pad_token_id: m.pad_token_id,
            bos_token: m.bos_token.clone(),
            eos_token: m.eos_token.clone(),
            add_bos: Some(m.add_bos),
            add_eos: Some(m.add_eos),
            generation_config: m.generation_config.clone(),
            unk_token: match &m.tokenizer {
                Some(TokenizerSource::Gguf {
                    unk: Some(u),
                    tokens,
                    ..
                }) => tokens.get(*u as usize).cloned(),
                _ => None,
            },
            gguf_pre: match &m.tokenizer {
                Some(TokenizerSource::Gguf { pre, .. }) => pre.clone(),
                _ => None,
            },
        }
    }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| FormatError::json(path, "write", e))?;
    std::fs::write(path, text + "\n").map_err(|e| FormatError::io(path, e))
}

/// The (name, shape, values) list a folder stores: every tensor of the layout (a tied model
/// has no `lm_head.weight` in its layout, so none is written).
pub(crate) fn named_tensors(params: &Params) -> Vec<(String, Vec<usize>, &[f32])> {
    params
        .layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), &params.data[t.range()]))
        .collect()
}

/// Writes a model folder in our native (Hugging Face) layout. Creates `dir` if needed and
/// overwrites the files it writes.
pub fn save_model(dir: &Path, params: &Params, opts: &SaveOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let extras = HfExtras {
        bos_token_id: opts.bos_token_id,
        eos_token_ids: opts.eos_token_ids.clone(),
        pad_token_id: opts.pad_token_id,
    };
    write_json(
        &dir.join("config.json"),
        &config_json(&params.config, &extras, opts.dtype.name()),
    )?;
    safetensors_io::write(
        &dir.join("model.safetensors"),
        named_tensors(params),
        opts.dtype,
    )?;
    save_tokenizer_files(dir, opts)
}

/// Writes what runs a model besides its weights: `tokenizer.json` (when known),
/// `tokenizer_config.json` and `generation_config.json`. Checkpoints carry these too.
pub fn save_tokenizer_files(dir: &Path, opts: &SaveOptions) -> Result<()> {
    let tok = dir.join("tokenizer.json");
    match &opts.tokenizer_json {
        TokenizerJson::None => {}
        TokenizerJson::Copy(src) => {
            if src.canonicalize().ok() != tok.canonicalize().ok() {
                std::fs::copy(src, &tok).map_err(|e| FormatError::io(src, e))?;
            }
        }
        TokenizerJson::Text(t) => std::fs::write(&tok, t).map_err(|e| FormatError::io(&tok, e))?,
    }
    let mut tc = Map::new();
    tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    if let Some(t) = &opts.chat_template {
        tc.insert("chat_template".into(), json!(t));
    }
    if let Some(b) = opts.add_bos {
        tc.insert("add_bos_token".into(), json!(b));
    }
    if let Some(b) = opts.add_eos {
        tc.insert("add_eos_token".into(), json!(b));
    }
    if let Some(t) = &opts.bos_token {
        tc.insert("bos_token".into(), json!(t));
    }
    if let Some(t) = &opts.eos_token {
        tc.insert("eos_token".into(), json!(t));
    }
    if let Some(t) = &opts.unk_token {
        tc.insert("unk_token".into(), json!(t));
    }
    if let Some(p) = &opts.gguf_pre {
        tc.insert("gguf_pre".into(), json!(p));
    }
    write_json(&dir.join("tokenizer_config.json"), &Value::Object(tc))?;
    let gen = match &opts.generation_config {
        Some(g) => g.clone(),
        None => {
            let eos = match opts.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            };
            json!({"bos_token_id": opts.bos_token_id, "eos_token_id": eos, "pad_token_id": opts.pad_token_id})
        }
    };
    write_json(&dir.join("generation_config.json"), &gen)?;
    Ok(())
}

/// Writes `m` as a native folder, carrying its tokenizer.json, template and special tokens.
pub fn save_loaded(dir: &Path, m: &LoadedModel, dtype: DType) -> Result<()> {
    save_model(dir, &m.params, &SaveOptions::from_loaded(m, dtype))
}
