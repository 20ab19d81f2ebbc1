//! What a path given on the command line really is, recognised by content as well as by name,
//! so that a wrong input gets an error that says what it is instead of silent garbage
//! (a JSON file read as token ids, a dataset given as a model, ...).

use crate::output::Coded;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The kinds of file and folder this tool meets.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Json,
    Jsonl,
    Gguf,
    Safetensors,
    /// A llama2.c model checkpoint (.bin with a plausible header).
    Llama2cModel,
    /// A llama2.c tokenizer.bin.
    Llama2cTokenizer,
    /// A Hugging Face tokenizer.json.
    TokenizerJson,
    /// Anything else that is binary: raw token ids, as far as we can tell.
    Binary,
    /// An ingested dataset folder (manifest.json).
    Dataset,
    /// A training run folder (config.toml + checkpoints/ or model/).
    RunFolder,
    /// A training checkpoint folder (trainer_state.json).
    Checkpoint,
    /// A PEFT adapter folder.
    Adapter,
    /// A Hugging Face model folder.
    ModelFolder,
    /// A folder of none of those kinds.
    OtherFolder,
}

impl Kind {
    /// "a JSON file", "an ingested dataset folder", ... for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Text => "a text file",
            Kind::Json => "a JSON file",
            Kind::Jsonl => "a JSONL file",
            Kind::Gguf => "a GGUF model file",
            Kind::Safetensors => "a safetensors file",
            Kind::Llama2cModel => "a llama2.c model file",
            Kind::Llama2cTokenizer => "a llama2.c tokenizer file",
            Kind::TokenizerJson => "a tokenizer (tokenizer.json)",
            Kind::Binary => "a binary file",
            Kind::Dataset => "an ingested dataset folder",
            Kind::RunFolder => "a training run folder",
            Kind::Checkpoint => "a training checkpoint folder",
            Kind::Adapter => "a LoRA adapter folder",
            Kind::ModelFolder => "a model folder",
            Kind::OtherFolder => "a folder",
        }
    }
}

/// Whether `dir` is a run folder that `train` wrote.
pub fn is_run_folder(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
        && ["checkpoints", "model", "adapter", "best"]
            .iter()
            .any(|d| dir.join(d).is_dir())
}

/// Recognises `path` (which must exist) from its name and its first bytes.
pub fn sniff(path: &Path) -> std::io::Result<Kind> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let has = |f: &str| path.join(f).is_file();
        return Ok(if has("manifest.json") {
            Kind::Dataset
        } else if has("trainer_state.json") {
            Kind::Checkpoint
        } else if has("adapter_config.json") {
            Kind::Adapter
        } else if has("config.json") {
            Kind::ModelFolder
        } else if is_run_folder(path) {
            Kind::RunFolder
        } else {
            Kind::OtherFolder
        });
    }
    let mut head = Vec::with_capacity(65536);
    std::fs::File::open(path)?
        .take(65536)
        .read_to_end(&mut head)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(classify(&name, &head, meta.len()))
}

/// The classification behind `sniff`, on a file's name and first bytes.
pub fn classify(name: &str, head: &[u8], len: u64) -> Kind {
    if head.starts_with(b"GGUF") {
        return Kind::Gguf;
    }
    if looks_like_safetensors(head, len) {
        return Kind::Safetensors;
    }
    if looks_like_text(head) {
        let text = String::from_utf8_lossy(head);
        let trimmed = text.trim_start();
        if name.ends_with(".jsonl") {
            return Kind::Jsonl;
        }
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if name == "tokenizer.json"
                || trimmed.contains("\"model\"") && trimmed.contains("\"vocab\"")
            {
                return Kind::TokenizerJson;
            }
            // One JSON object per line is JSONL whatever the name.
            let mut lines = trimmed.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("");
            if lines.next().is_some()
                && serde_json::from_str::<serde_json::Value>(first).is_ok()
                && first.trim_start().starts_with('{')
            {
                return Kind::Jsonl;
            }
            return Kind::Json;
        }
        return Kind::Text;
    }
    if name == "tokenizer.bin" || looks_like_llama2c_tokenizer(head) {
        return Kind::Llama2cTokenizer;
    }
    if name.ends_with(".bin") && looks_like_llama2c_model(head, len) {
        return Kind::Llama2cModel;
    }
    Kind::Binary
}

/// UTF-8 (a cut last character allowed), no NUL, and almost no control characters besides
/// tab, newline and carriage return. Token ids as u16/u32 have NULs or many control bytes.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
        .count();
    valid && control * 1000 <= head.len()
}

/// 8-byte little-endian header length, then a JSON object that fits in the file.
fn looks_like_safetensors(head: &[u8], len: u64) -> bool {
    if head.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    n >= 2 && n.saturating_add(8) <= len && head[8] == b'{'
}

/// int32 max_token_length (small), then records of (f32 score, int32 length, bytes): the
/// first records (up to 16, or to the end of the head) must all be well formed.
fn looks_like_llama2c_tokenizer(head: &[u8]) -> bool {
    let int = |at: usize| -> Option<i32> {
        head.get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(max_len) = int(0).filter(|m| (1..=256).contains(m)) else {
        return false;
    };
    let mut at = 4;
    for _ in 0..16 {
        let (Some(score_bits), Some(len)) = (int(at), int(at + 4)) else {
            return at > 4; // the head ended after whole records
        };
        let score = f32::from_bits(score_bits as u32);
        // Token ids read as f32 are denormals; real scores are 0 or ordinary numbers.
        let plausible_score = score == 0.0 || (score.is_normal() && score.abs() < 1e9);
        if !plausible_score || !(1..=max_len).contains(&len) {
            return false;
        }
        at += 8 + len as usize;
    }
    true
}

/// Seven int32: dim, hidden, layers, heads, kv heads, vocab (negative = untied), seq; and a
/// file at least as large as the embedding they imply.
fn looks_like_llama2c_model(head: &[u8], len: u64) -> bool {
    if head.len() < 28 {
        return false;
    }
    let v: Vec<i64> = head[..28]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
        .collect();
    let (dim, hidden, layers, heads, kv, vocab, seq) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    let small = |x: i64, hi: i64| x >= 1 && x <= hi;
    small(dim, 65536)
        && small(hidden, 1 << 20)
        && small(layers, 1024)
        && small(heads, 1024)
        && small(kv, heads)
        && dim % heads == 0
        && small(vocab.abs(), 1 << 22)
        && small(seq, 1 << 22)
        && (dim as u64) * (vocab.unsigned_abs()) * 4 <= len
}

fn data_err(msg: String) -> anyhow::Error {
    Coded::new("data", crate::trainer::data_source::EXIT_DATA, msg).into()
}

/// Refuses a file given as raw token ids (`flag` names where it came from) when its content
/// shows it is something else; Ok for what may be raw ids.
pub fn check_raw_tokens(path: &Path, flag: &str) -> anyhow::Result<()> {
    let Ok(kind) = sniff(path) else {
        return Ok(()); // the reader reports a missing/unreadable file with its own words
    };
    let advice = match kind {
        Kind::Binary => return Ok(()),
        Kind::Json => "ingest it (`neuralforge ingest`), or give JSON Lines as a .jsonl file",
        Kind::Jsonl => "give it a .jsonl name, or ingest it (`neuralforge ingest`)",
        Kind::Text => "give it a .txt name, or ingest it (`neuralforge ingest`)",
        Kind::Gguf | Kind::Safetensors | Kind::Llama2cModel | Kind::ModelFolder => {
            "give a model as --model, and token ids or text as data"
        }
        Kind::Llama2cTokenizer | Kind::TokenizerJson => {
            "give a tokenizer as --tokenizer, and token ids or text as data"
        }
        _ => "give raw token ids, a .txt/.jsonl file or an ingested folder",
    };
    Err(data_err(format!(
        "{flag} {}: this is {}, not raw token ids: {advice}",
        path.display(),
        kind.describe()
    )))
}

/// A model path as the user gave it, turned into what to load: a run folder becomes its final
/// model (else best/, else the latest checkpoint). Kinds that are no model get an error that
/// says what they are. Returns the path and, when it was chosen for the user, a note saying so.
pub fn resolve_model(path: &Path, flag: &str) -> anyhow::Result<(PathBuf, Option<String>)> {
    let model_err = |msg: String| -> anyhow::Error {
        Coded::new("model", crate::trainer::model_setup::EXIT_MODEL, msg).into()
    };
    if !path.exists() {
        return Err(model_err(format!(
            "{flag} {} does not exist",
            path.display()
        )));
    }
    let kind = sniff(path).map_err(|e| model_err(format!("{flag} {}: {e}", path.display())))?;
    let not_a_model = |what: &str, advice: &str| -> anyhow::Error {
        model_err(format!(
            "{flag} {} is {what}, not a model: {advice}",
            path.display()
        ))
    };
    match kind {
        Kind::RunFolder => {
            let final_model = ["model", "adapter"].map(|d| path.join(d));
            let pick = final_model
                .iter()
                .find(|p| p.is_dir())
                .map(|p| (p.clone(), "its final model"))
                .or_else(|| {
                    let b = path.join("best");
                    b.is_dir()
                        .then_some((b, "best/ (the run has no final model yet)"))
                })
                .or_else(|| {
                    formats::checkpoint::list(&path.join("checkpoints"))
                        .ok()
                        .and_then(|l| l.last().map(|(_, p)| p.clone()))
                        .map(|p| (p, "its latest checkpoint (no final model or best/ yet)"))
                });
            match pick {
                Some((p, why)) => {
                    let note = format!(
                        "run folder {}: using {why}, {}",
                        path.display(),
                        p.display()
                    );
                    Ok((p, Some(note)))
                }
                None => Err(model_err(format!(
                    "{flag} {} is a training run folder without a model, best/ or checkpoint yet",
                    path.display()
                ))),
            }
        }
        Kind::Dataset => Err(not_a_model(
            kind.describe(),
            "give it as --data, and a model folder, .gguf or .bin as the model",
        )),
        Kind::TokenizerJson | Kind::Llama2cTokenizer => Err(not_a_model(
            kind.describe(),
            "give it as --tokenizer, and a model folder, .gguf or .bin as the model",
        )),
        Kind::Text | Kind::Json | Kind::Jsonl => Err(not_a_model(
            kind.describe(),
            "give a model folder, a .gguf file, a llama2.c .bin or a run folder",
        )),
        Kind::OtherFolder => Err(not_a_model(
            "a folder without config.json, manifest.json or a run's files",
            "give a model folder, a .gguf file, a llama2.c .bin or a run folder",
        )),
        _ => Ok((path.to_path_buf(), None)),
    }
}

/// Refuses a dataset ingested with another tokenizer than the model's: the manifest records
/// the tokenizer's fingerprint and vocabulary size.
pub fn check_dataset_tokenizer(
    dir: &Path,
    tokenizer: Option<&data::Tokenizer>,
    allow_mismatch: bool,
) -> anyhow::Result<()> {
    let Some(tok) = tokenizer else { return Ok(()) };
    let Ok(m) = data::dataset::read_manifest(dir) else {
        return Ok(()); // the dataset reader reports a broken manifest itself
    };
    let fingerprint = tok.fingerprint().unwrap_or_default();
    let same = m.tokenizer.fingerprint == fingerprint && m.vocab_size == tok.vocab_size();
    if same || allow_mismatch {
        return Ok(());
    }
    Err(data_err(format!(
        "{} was ingested with another tokenizer ({}, {} tokens, fingerprint {:.12}) than the \
         model's ({} tokens, fingerprint {:.12}): its token ids mean other text here. Ingest \
         the data again with --tokenizer set to this model, or pass \
         --allow-tokenizer-mismatch if you know the two agree",
        dir.display(),
        m.tokenizer.source,
        m.vocab_size,
        m.tokenizer.fingerprint,
        tok.vocab_size(),
        fingerprint
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_recognised_whatever_the_name() {
        let ids: Vec<u8> = (0u16..3000)
            .flat_map(|i| (i * 7 % 512).to_le_bytes())
            .collect();
        assert_eq!(classify("tokens.bin", &ids, ids.len() as u64), Kind::Binary);
        assert_eq!(classify("notes.json", b"{\"a\": 1}\n", 9), Kind::Json);
        let jsonl = b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
        assert_eq!(classify("x.dat", jsonl, jsonl.len() as u64), Kind::Jsonl);
        assert_eq!(
            classify("story.bin", "Once upon a time.\n".as_bytes(), 18),
            Kind::Text
        );
        assert_eq!(classify("m.bin", b"GGUF\x03\0\0\0", 8), Kind::Gguf);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert_eq!(classify("w", &st, 10), Kind::Safetensors);
        let tok = b"{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\",\"vocab\":{}}}";
        assert_eq!(
            classify("t.json", tok, tok.len() as u64),
            Kind::TokenizerJson
        );
        // u32 token ids never pass for a llama2.c tokenizer.
        let wide: Vec<u8> = [5u32, 3, 2, 7, 1, 9, 4, 4, 8, 2, 6, 1, 3, 3, 5, 2, 9, 1]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        assert_eq!(classify("row.u32", &wide, wide.len() as u64), Kind::Binary);
        let mut t = 3i32.to_le_bytes().to_vec();
        for piece in [&b"<u>"[..], b"ab", b"c"] {
            t.extend(0.0f32.to_le_bytes());
            t.extend((piece.len() as i32).to_le_bytes());
            t.extend(piece);
        }
        assert_eq!(classify("t", &t, t.len() as u64), Kind::Llama2cTokenizer);
        // A text with a UTF-8 character cut at the 64 KiB boundary is still text.
        let mut cut = "é".repeat(10).into_bytes();
        cut.pop();
        assert_eq!(classify("a", &cut, 19), Kind::Text);
    }
}
