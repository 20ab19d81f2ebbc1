//! One tokenizer type for every source: Hugging Face `tokenizer.json`, llama2.c `tokenizer.bin`,
//! and the vocabulary embedded in a GGUF. Byte-level BPE and other HF models run on the
//! `tokenizers` crate; SentencePiece BPE with scores runs on our own [`spm::SpmModel`] (exact
//! SentencePiece merge order), and can be saved as an equivalent `tokenizer.json`.

mod export;
pub mod gguf;
mod gguf_meta;
mod hf;
pub mod llama2c;
pub mod spm;
mod stream;
pub mod train;

pub use gguf::GgufVocab;
pub use stream::StreamDecoder;

use crate::error::{DataError, Result};
use spm::{PieceKind, SpmModel};
use std::path::Path;

/// Where a tokenizer came from; decides a few reference behaviours (see `encode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// A Hugging Face `tokenizer.json` (or one we built, e.g. from a GGUF "gpt2" vocabulary).
    HuggingFace,
    /// SentencePiece BPE with scores (llama2.c `tokenizer.bin`, GGUF "llama").
    SentencePiece,
}

enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<SpmModel>),
}

/// A loaded tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    backend: Backend,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    /// Special tokens matched in text by `encode_special` (longest first).
    specials: Vec<(String, u32)>,
}

/// Special-token settings that come from outside the vocabulary (config files, GGUF keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialConfig {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (+ `tokenizer_config.json` beside it), a llama2.c `tokenizer.bin`,
    /// a model folder holding one of those, or a `.gguf` file.
    pub fn from_path(path: &Path) -> Result<Tokenizer> {
        if path.is_dir() {
            for name in ["tokenizer.json", "tokenizer.bin"] {
                let p = path.join(name);
                if p.is_file() {
                    return Tokenizer::from_path(&p);
                }
            }
            let gguf = std::fs::read_dir(path)
                .map_err(|e| DataError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "gguf"));
            return match gguf {
                Some(p) => Tokenizer::from_path(&p),
                None => Err(DataError::format(
                    path,
                    "no tokenizer.json, tokenizer.bin or .gguf in this folder",
                )),
            };
        }
        if has_gguf_magic(path)? {
            let vocab = gguf::read_gguf_vocab(path)?;
            return Tokenizer::from_gguf_vocab(&vocab).map_err(|e| match e {
                DataError::Tokenizer(m) => DataError::format(path, m),
                other => other,
            });
        }
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            return hf::load_json(path, &bytes);
        }
        Tokenizer::from_llama2c_bytes(path, &bytes)
    }

    /// A llama2.c `tokenizer.bin` (BOS 1, EOS 2, adds BOS like llama2.c's `run`).
    pub fn from_llama2c_bytes(path: &Path, bytes: &[u8]) -> Result<Tokenizer> {
        let model = llama2c::parse(path, bytes)?.into_model(path)?;
        let cfg = SpecialConfig {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            add_bos: Some(true),
            ..Default::default()
        };
        Ok(Tokenizer::from_spm(model, cfg))
    }

    /// Wraps a SentencePiece model with its special tokens.
    pub fn from_spm(model: SpmModel, cfg: SpecialConfig) -> Tokenizer {
        let mut specials: Vec<(String, u32)> = model
            .kinds()
            .iter()
            .enumerate()
            .filter(|(_, k)| matches!(k, PieceKind::Control | PieceKind::UserDefined))
            .filter_map(|(id, _)| {
                let piece = model.piece(id as u32)?;
                (!piece.is_empty()).then(|| (piece.to_string(), id as u32))
            })
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Tokenizer {
            unk: cfg.unk.or(Some(model.unk_id())),
            backend: Backend::Spm(Box::new(model)),
            bos: cfg.bos,
            eos: cfg.eos,
            pad: cfg.pad,
            add_bos: cfg.add_bos.unwrap_or(true),
            add_eos: cfg.add_eos.unwrap_or(false),
            chat_template: cfg.chat_template,
            specials,
        }
    }

    /// Wraps a `tokenizers` tokenizer with its special tokens.
    pub fn from_hf(tok: tokenizers::Tokenizer, cfg: SpecialConfig) -> Tokenizer {
        let mut specials: Vec<(String, u32)> = tok
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (t.content, id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Tokenizer {
            backend: Backend::Hf(Box::new(tok)),
            bos: cfg.bos,
            eos: cfg.eos,
            pad: cfg.pad,
            unk: cfg.unk,
            add_bos: cfg.add_bos.unwrap_or(false),
            add_eos: cfg.add_eos.unwrap_or(false),
            chat_template: cfg.chat_template,
            specials,
        }
    }

    /// A tokenizer from a GGUF's `tokenizer.ggml.*` metadata.
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Tokenizer> {
        gguf::build(vocab)
    }

    /// A tokenizer from the formats crate's description of a model's tokenizer. A GGUF source
    /// carries no chat template; set it with [`Tokenizer::set_chat_template`].
    pub fn from_source(source: &formats::TokenizerSource) -> Result<Tokenizer> {
        match source {
            formats::TokenizerSource::HfJson(p) | formats::TokenizerSource::Llama2cBin(p) => {
                Tokenizer::from_path(p)
            }
            formats::TokenizerSource::Gguf {
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
            } => gguf::build(&GgufVocab {
                model: model.clone(),
                pre: pre.clone(),
                tokens: tokens.clone(),
                scores: scores.clone(),
                token_types: token_types.clone(),
                merges: merges.clone(),
                bos: *bos,
                eos: *eos,
                unk: *unk,
                pad: *pad,
                add_bos: *add_bos,
                add_eos: *add_eos,
                add_space_prefix: None,
                chat_template: None,
            }),
        }
    }

    pub fn kind(&self) -> TokenizerKind {
        match self.backend {
            Backend::Hf(_) => TokenizerKind::HuggingFace,
            Backend::Spm(_) => TokenizerKind::SentencePiece,
        }
    }

    /// Encodes text as its reference implementation does by default: `tokenizers` matches
    /// added/special tokens in the text, SentencePiece treats "<s>" as plain text. `add_bos`
    /// prepends BOS when the tokenizer has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let ids = match &self.backend {
            Backend::Hf(t) => t
                .encode_fast(text, false)
                .map_err(|e| DataError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec(),
            Backend::Spm(m) => m.encode(text, true).into_iter().map(|t| t.id).collect(),
        };
        Ok(self.with_bos(ids, add_bos))
    }

    /// Like `encode`, but special tokens written in the text ("<s>", "<|im_end|>") always
    /// become their ids. Use it for rendered chat templates.
    pub fn encode_special(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let ids = self
            .encode_with_offsets(text)?
            .into_iter()
            .map(|t| t.0)
            .collect();
        Ok(self.with_bos(ids, add_bos))
    }

    /// Encodes with special tokens parsed, giving each token's byte range in `text` (no BOS).
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, usize, usize)>> {
        match &self.backend {
            Backend::Hf(t) => {
                let enc = t
                    .encode(text, false)
                    .map_err(|e| DataError::Tokenizer(e.to_string()))?;
                Ok(enc
                    .get_ids()
                    .iter()
                    .zip(enc.get_offsets())
                    .map(|(&id, &(s, e))| (id, s, e))
                    .collect())
            }
            Backend::Spm(m) => Ok(self.spm_encode_special(m, text)),
        }
    }

    /// Splits at special tokens; each text fragment gets the dummy prefix (as the HF "legacy"
    /// Llama tokenizer does).
    fn spm_encode_special(&self, m: &SpmModel, text: &str) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        let mut frag_start = 0;
        let mut pos = 0;
        let bytes = text.as_bytes();
        while pos < bytes.len() {
            let hit = self
                .specials
                .iter()
                .find(|(s, _)| bytes[pos..].starts_with(s.as_bytes()));
            match hit {
                Some((s, id)) => {
                    push_spm(m, text, frag_start, pos, &mut out);
                    out.push((*id, pos, pos + s.len()));
                    pos += s.len();
                    frag_start = pos;
                }
                None => {
                    pos += 1;
                    while pos < bytes.len() && !text.is_char_boundary(pos) {
                        pos += 1;
                    }
                }
            }
        }
        push_spm(m, text, frag_start, bytes.len(), &mut out);
        out
    }

    fn with_bos(&self, ids: Vec<u32>, add_bos: bool) -> Vec<u32> {
        match (add_bos, self.bos) {
            (true, Some(b)) => {
                let mut v = Vec::with_capacity(ids.len() + 1);
                v.push(b);
                v.extend(ids);
                v
            }
            _ => ids,
        }
    }

    /// Decodes as the reference does: `tokenizers` keeps special tokens' text, SentencePiece
    /// drops control tokens and the dummy-prefix space. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_fragment(ids, true)
    }

    /// Decodes without special tokens (for display of generated text).
    pub fn decode_skip_special(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Hf(t) => t.decode(ids, true).unwrap_or_default(),
            Backend::Spm(_) => self.decode_fragment(ids, true),
        }
    }

    /// Decodes a slice; `at_start` says whether it begins the text (strip the dummy prefix).
    pub(crate) fn decode_fragment(&self, ids: &[u32], at_start: bool) -> String {
        match &self.backend {
            Backend::Hf(t) => t.decode(ids, false).unwrap_or_else(|_| {
                // Unknown ids: decode the known ones rather than fail a display path.
                let known: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|&i| t.id_to_token(i).is_some())
                    .collect();
                t.decode(&known, false).unwrap_or_default()
            }),
            Backend::Spm(m) => {
                let mut bytes = Vec::new();
                for &id in ids {
                    bytes.extend(m.token_bytes(id, false));
                }
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                if at_start && m.add_dummy_prefix() && text.starts_with(' ') {
                    text.remove(0);
                }
                text
            }
        }
    }

    /// A decoder for generated tokens that never emits half a UTF-8 character.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// The vocabulary entry of an id ("▁Once", "Ġcapital", "<0x0A>").
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Hf(t) => t.id_to_token(id),
            Backend::Spm(m) => m.piece(id).map(str::to_string),
        }
    }

    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(t) => t.token_to_id(piece),
            Backend::Spm(m) => m.pieces().iter().position(|p| p == piece).map(|i| i as u32),
        }
    }

    /// Number of ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(t) => {
                // Added tokens may sit beyond the model's vocabulary; count the highest id.
                let max_added = t
                    .get_added_tokens_decoder()
                    .keys()
                    .map(|&k| k as usize + 1)
                    .max()
                    .unwrap_or(0);
                t.get_vocab_size(true).max(max_added)
            }
            Backend::Spm(m) => m.vocab_size(),
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }
    /// Whether the model expects BOS at the start of a sequence.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Special / added tokens: (text, id).
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    pub fn is_special(&self, id: u32) -> bool {
        Some(id) == self.bos || Some(id) == self.eos || self.specials.iter().any(|(_, i)| *i == id)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` (pretty JSON). For SentencePiece models
    /// it is the Llama-style BPE with byte fallback and merges ordered by piece score.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        match &self.backend {
            Backend::Hf(t) => t
                .to_string(true)
                .map_err(|e| DataError::Tokenizer(e.to_string())),
            Backend::Spm(m) => export::spm_tokenizer_json(m, self.bos, self.add_bos),
        }
    }

    /// SHA-256 (hex) of `to_tokenizer_json()`: what a dataset's manifest records, so that data
    /// ingested with one tokenizer is never trained or read under another.
    pub fn fingerprint(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let json = self.to_tokenizer_json()?;
        Ok(Sha256::digest(json.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// A `tokenizer_config.json` with the special tokens, add_bos/add_eos and chat template.
    pub fn tokenizer_config_json(&self) -> serde_json::Value {
        let name = |id: Option<u32>| id.and_then(|i| self.id_to_piece(i));
        let mut cfg = serde_json::json!({
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "bos_token": name(self.bos),
            "eos_token": name(self.eos),
            "pad_token": name(self.pad),
            "unk_token": name(self.unk),
            "clean_up_tokenization_spaces": false,
            "model_max_length": 1_000_000_000_000_000_000u64,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(t) = &self.chat_template {
            cfg["chat_template"] = serde_json::Value::String(t.clone());
        }
        cfg
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let json = self.to_tokenizer_json()?;
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, json).map_err(|e| DataError::io(&p, e))?;
        let p = dir.join("tokenizer_config.json");
        let cfg = serde_json::to_string_pretty(&self.tokenizer_config_json())
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        std::fs::write(&p, cfg).map_err(|e| DataError::io(&p, e))
    }

    /// The SentencePiece model behind this tokenizer, if it is one (for llama2.c export).
    pub fn spm_model(&self) -> Option<&SpmModel> {
        match &self.backend {
            Backend::Spm(m) => Some(m),
            Backend::Hf(_) => None,
        }
    }

    /// The `tokenizers` tokenizer behind this one, if it is one.
    pub fn hf_tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::Spm(_) => None,
        }
    }
}

/// Whether a file starts with the GGUF magic (read without loading the whole file).
fn has_gguf_magic(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(DataError::io(path, e)),
    }
}

fn push_spm(
    m: &SpmModel,
    text: &str,
    start: usize,
    end: usize,
    out: &mut Vec<(u32, usize, usize)>,
) {
    if start < end {
        out.extend(
            m.encode(&text[start..end], true)
                .into_iter()
                .map(|t| (t.id, t.start + start, t.end + start)),
        );
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}
