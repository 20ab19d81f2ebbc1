//! Token streams for training and validation: from a raw token file, or text (.txt / .jsonl)
//! tokenized on the fly, or an ingested shard folder. Every id is checked against the vocabulary.

use crate::output::Coded;
use anyhow::Context;
use std::path::Path;

/// Exit status of unusable data.
pub const EXIT_DATA: i32 = 4;

/// One token stream and (optionally) which positions count as targets.
#[derive(Debug, Clone, Default)]
pub struct TokenData {
    pub tokens: Vec<u32>,
    /// `mask[i] == 0`: token i is never a training target (e.g. a prompt in SFT data).
    pub mask: Option<Vec<u8>>,
    /// Human description ("12345 tokens from x.txt (2316 documents)").
    pub source: String,
}

/// What the loader needs from a tokenizer.
pub trait Encode {
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>>;
    fn bos(&self) -> Option<u32>;
    fn eos(&self) -> Option<u32>;
}

fn data_err(msg: String) -> anyhow::Error {
    Coded::new("data", EXIT_DATA, msg).into()
}

/// Reads a raw little-endian token file (u16 as llama2.c writes, or u32).
pub fn read_raw_tokens(path: &Path, dtype: &str) -> anyhow::Result<Vec<u32>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading token file {}", path.display()))?;
    let width = if dtype == "u32" { 4 } else { 2 };
    if bytes.len() % width != 0 {
        return Err(data_err(format!(
            "{}: {} bytes is not a whole number of {dtype} tokens (--token-dtype)",
            path.display(),
            bytes.len()
        )));
    }
    Ok(if width == 2 {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// Splits a text file into documents: at lines reading `<|endoftext|>` when there are any,
/// otherwise at blank lines.
pub fn split_documents(text: &str) -> Vec<&str> {
    let marker = "<|endoftext|>";
    let docs: Vec<&str> = if text.lines().any(|l| l.trim() == marker) {
        let mut out = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        for line in text.split_inclusive('\n') {
            if line.trim() == marker {
                out.push(&text[start..pos]);
                start = pos + line.len();
            }
            pos += line.len();
        }
        out.push(&text[start..]);
        out
    } else {
        text.split("\n\n").collect()
    };
    docs.into_iter()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect()
}

/// Tokenizes documents: each led by BOS (llama2.c's pretokenize convention), no EOS.
fn encode_documents(docs: &[&str], tok: &dyn Encode) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for d in docs {
        if let Some(b) = tok.bos() {
            out.push(b);
        }
        out.extend(tok.encode(d)?);
    }
    Ok(out)
}

/// JSONL rows: {"text"} trains on everything; {"prompt","completion"} trains on the completion
/// only (the prompt positions are masked). Each row is led by BOS and ends with EOS.
fn encode_jsonl(path: &Path, text: &str, tok: &dyn Encode) -> anyhow::Result<TokenData> {
    let mut tokens = Vec::new();
    let mut mask = Vec::new();
    let mut rows = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| data_err(format!("{} line {}: not JSON: {e}", path.display(), i + 1)))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str());
        let (prompt, completion) = match (field("text"), field("prompt"), field("completion")) {
            (Some(t), _, _) => ("", t),
            (None, Some(p), Some(c)) => (p, c),
            _ => {
                return Err(data_err(format!(
                    "{} line {}: expected a \"text\" field or \"prompt\" + \"completion\" \
                     (chat \"messages\" need `neuralforge ingest` with a chat template)",
                    path.display(),
                    i + 1
                )))
            }
        };
        if let Some(b) = tok.bos() {
            tokens.push(b);
            mask.push(0);
        }
        if !prompt.is_empty() {
            let p = tok.encode(prompt)?;
            mask.extend(std::iter::repeat_n(0u8, p.len()));
            tokens.extend(p);
        }
        let c = tok.encode(completion)?;
        mask.extend(std::iter::repeat_n(1u8, c.len()));
        tokens.extend(c);
        if let Some(e) = tok.eos() {
            tokens.push(e);
            mask.push(1);
        }
        rows += 1;
    }
    let all_targets = !mask.contains(&0);
    Ok(TokenData {
        source: format!(
            "{} tokens from {} ({rows} rows)",
            tokens.len(),
            path.display()
        ),
        mask: if all_targets { None } else { Some(mask) },
        tokens,
    })
}

fn need_tokenizer<'a>(path: &Path, tok: Option<&'a dyn Encode>) -> anyhow::Result<&'a dyn Encode> {
    tok.ok_or_else(|| {
        data_err(format!(
            "{} is text: give --tokenizer (or a --model that has one) to tokenize it",
            path.display()
        ))
    })
}

/// Loads `path` as a token stream and checks every id against `vocab`. For an ingested
/// folder, `split` picks "train" or "val" (None when that split is empty).
pub fn load_split(
    path: &Path,
    split: &str,
    token_dtype: &str,
    tok: Option<&dyn Encode>,
    vocab: usize,
) -> anyhow::Result<Option<TokenData>> {
    if path.is_dir() {
        let Some(data) = super::dataset::load_ingested(path, split)? else {
            return Ok(None);
        };
        check(path, &data, vocab)?;
        return Ok(Some(data));
    }
    load(path, token_dtype, tok, vocab).map(Some)
}

/// Loads `path` as a token stream and checks every id against `vocab`.
pub fn load(
    path: &Path,
    token_dtype: &str,
    tok: Option<&dyn Encode>,
    vocab: usize,
) -> anyhow::Result<TokenData> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("data {}", path.display()))
        .map_err(|e| data_err(format!("{e:#}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let data = if meta.is_dir() {
        super::dataset::load_ingested(path, "train")?
            .ok_or_else(|| data_err(format!("{}: the train split is empty", path.display())))?
    } else if ext == "txt" || ext == "md" {
        let tok = need_tokenizer(path, tok)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading text {}", path.display()))?;
        let docs = split_documents(&text);
        let tokens = encode_documents(&docs, tok)?;
        TokenData {
            source: format!(
                "{} tokens from {} ({} documents)",
                tokens.len(),
                path.display(),
                docs.len()
            ),
            tokens,
            mask: None,
        }
    } else if ext == "jsonl" {
        let tok = need_tokenizer(path, tok)?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        encode_jsonl(path, &text, tok)?
    } else {
        // Only what is not text, JSON or a format we know is read as raw ids.
        crate::inputs::check_raw_tokens(path, "data")?;
        let tokens = read_raw_tokens(path, token_dtype)?;
        TokenData {
            source: format!(
                "{} {token_dtype} tokens from {}",
                tokens.len(),
                path.display()
            ),
            tokens,
            mask: None,
        }
    };
    check(path, &data, vocab)?;
    Ok(data)
}

fn check(path: &Path, data: &TokenData, vocab: usize) -> anyhow::Result<()> {
    if let Some((pos, id)) = data
        .tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(data_err(format!(
            "{}: token id {id} at position {pos} is not below the model's vocabulary size {vocab}",
            path.display()
        )));
    }
    if let Some(m) = &data.mask {
        if m.len() != data.tokens.len() {
            return Err(data_err(format!(
                "{}: loss mask has {} entries for {} tokens",
                path.display(),
                m.len(),
                data.tokens.len()
            )));
        }
    }
    Ok(())
}

impl TokenData {
    /// Splits off the last `fraction` of the tokens (at least one window's worth is left to
    /// each side by the caller's window check).
    pub fn split_tail(&mut self, fraction: f64) -> TokenData {
        let n = self.tokens.len();
        let k = ((n as f64) * fraction).floor() as usize;
        let at = n - k.min(n);
        let tokens = self.tokens.split_off(at);
        let mask = self.mask.as_mut().map(|m| m.split_off(at));
        TokenData {
            source: format!("last {} tokens of the training data", tokens.len()),
            tokens,
            mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes;
    impl Encode for Bytes {
        fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn bos(&self) -> Option<u32> {
            Some(256)
        }
        fn eos(&self) -> Option<u32> {
            Some(257)
        }
    }

    #[test]
    fn documents_split_at_endoftext_or_blank_lines() {
        let t = "a b\nc\n<|endoftext|>\nd\n<|endoftext|>\n";
        assert_eq!(split_documents(t), ["a b\nc", "d"]);
        assert_eq!(split_documents("x\n\ny\n\n\nz"), ["x", "y", "z"]);
        let toks = encode_documents(&split_documents(t), &Bytes).unwrap();
        assert_eq!(toks[0], 256);
        assert_eq!(toks.iter().filter(|&&t| t == 256).count(), 2);
    }

    #[test]
    fn jsonl_masks_prompts() {
        let d = encode_jsonl(
            Path::new("x.jsonl"),
            "{\"prompt\":\"ab\",\"completion\":\"c\"}\n",
            &Bytes,
        )
        .unwrap();
        assert_eq!(d.tokens, [256, 97, 98, 99, 257]);
        assert_eq!(d.mask.unwrap(), [0, 0, 0, 1, 1]);
        let e = encode_jsonl(Path::new("x.jsonl"), "{\"q\":1}\n", &Bytes).unwrap_err();
        assert!(format!("{e}").contains("line 1"));
    }

    #[test]
    fn raw_tokens_are_checked() {
        let dir = std::env::temp_dir().join(format!("nf-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.bin");
        std::fs::write(&p, [1u8, 0, 2, 0, 3]).unwrap();
        assert!(format!("{:#}", load(&p, "u16", None, 10).unwrap_err()).contains("whole number"));
        std::fs::write(&p, [1u8, 0, 12, 0]).unwrap();
        let e = format!("{:#}", load(&p, "u16", None, 10).unwrap_err());
        assert!(e.contains("token id 12 at position 1"), "{e}");
        assert_eq!(load(&p, "u16", None, 13).unwrap().tokens, [1, 12]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
