//! What every importer returns, and the entry point that picks the importer.

use crate::error::{FormatError, Result};
use engine::Params;
use std::path::{Path, PathBuf};

/// Where a model's tokenizer comes from, in the raw form its file stores it.
/// The `data` crate turns any of these into a working tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`.
    HfJson(PathBuf),
    /// A llama2.c `tokenizer.bin` (read it with [`crate::llama2c::read_tokenizer`]).
    Llama2cBin(PathBuf),
    /// The vocabulary embedded in a GGUF file (`tokenizer.ggml.*`).
    Gguf {
        /// `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE).
        model: String,
        /// `tokenizer.ggml.pre`: the pre-tokenizer name of gpt2 models (e.g. "smollm").
        pre: Option<String>,
        tokens: Vec<String>,
        scores: Option<Vec<f32>>,
        token_types: Option<Vec<i32>>,
        merges: Option<Vec<String>>,
        bos: Option<u32>,
        eos: Option<u32>,
        unk: Option<u32>,
        pad: Option<u32>,
        add_bos: Option<bool>,
        add_eos: Option<bool>,
    },
}

impl TokenizerSource {
    /// A short name for reports: "hf-json", "llama2c-bin", "gguf-llama", "gguf-gpt2".
    pub fn kind(&self) -> String {
        match self {
            TokenizerSource::HfJson(_) => "hf-json".into(),
            TokenizerSource::Llama2cBin(_) => "llama2c-bin".into(),
            TokenizerSource::Gguf { model, .. } => format!("gguf-{model}"),
        }
    }
}

/// The file families we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face folder (config.json + safetensors), our native format.
    Hf,
    Gguf,
    Llama2c,
}

/// A model read from disk: weights in the internal layout plus what is needed to run it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub params: Params,
    pub tokenizer: Option<TokenizerSource>,
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Whether encoding a prompt starts with BOS.
    pub add_bos: bool,
    pub add_eos: bool,
    /// Text of the special tokens where the file names them (e.g. "<|im_start|>").
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// generation_config.json as read (HF folders only).
    pub generation_config: Option<serde_json::Value>,
    pub format: ModelFormat,
    /// Human description of format and storage type, e.g. "gguf v3 Q4_1 (F32 norms)".
    pub source: String,
    /// The file or folder it came from.
    pub path: PathBuf,
}

/// Which reader a path needs: a folder with config.json (HF), `*.gguf` (or GGUF magic),
/// otherwise a llama2.c `.bin`.
pub fn detect_format(path: &Path) -> Result<ModelFormat> {
    let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelFormat::Hf);
        }
        return Err(FormatError::invalid(
            path,
            "config.json",
            "folder has no config.json (not a Hugging Face model folder)",
        ));
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        let n = f.read(&mut magic).map_err(|e| FormatError::io(path, e))?;
        if n < 4 {
            return Err(FormatError::invalid(
                path,
                "magic",
                "file shorter than 4 bytes",
            ));
        }
    }
    if &magic == b"GGUF" {
        return Ok(ModelFormat::Gguf);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("gguf") {
        return Err(FormatError::invalid(
            path,
            "magic",
            format!("expected \"GGUF\", found {magic:02x?}"),
        ));
    }
    if ext.eq_ignore_ascii_case("safetensors") || ext.eq_ignore_ascii_case("json") {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Err(FormatError::invalid(
            path,
            "path",
            format!(
                "give the model folder ({}) rather than one of its files",
                dir.display()
            ),
        ));
    }
    Ok(ModelFormat::Llama2c)
}

/// Loads any supported model file or folder.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    match detect_format(path)? {
        ModelFormat::Hf => crate::hf::load_model(path),
        ModelFormat::Gguf => crate::gguf::load_model(path),
        ModelFormat::Llama2c => crate::llama2c::load_model(path),
    }
}
