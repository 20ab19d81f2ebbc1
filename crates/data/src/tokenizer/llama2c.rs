//! llama2.c `tokenizer.bin`: `i32 max_token_length`, then per token `f32 score, i32 len, len
//! bytes` until the end of the file. Spaces are stored as ' ' (SentencePiece's "▁"), BOS and
//! EOS as "\n<s>\n" and "\n</s>\n", byte-fallback entries as `<0xXX>`.

use super::spm::{parse_byte_piece, PieceKind, SpmModel};
use crate::error::{DataError, Result};
use std::path::Path;

/// The vocabulary of a llama2.c tokenizer file, before it becomes a model.
#[derive(Debug, Clone)]
pub struct Llama2cVocab {
    pub max_token_length: u32,
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
}

/// Longest piece we accept; llama2.c's own files use 27 or less.
const MAX_PIECE_BYTES: usize = 1 << 16;

pub fn parse(path: &Path, bytes: &[u8]) -> Result<Llama2cVocab> {
    let err = |m: String| DataError::format(path, m);
    let mut cur = Cursor { bytes, pos: 0 };
    let max_len = cur
        .i32()
        .ok_or_else(|| err("file too short for max_token_length".into()))?;
    if max_len <= 0 || max_len as usize > MAX_PIECE_BYTES {
        return Err(err(format!("max_token_length {max_len} is not plausible")));
    }
    let mut pieces = Vec::new();
    let mut scores = Vec::new();
    while cur.pos < bytes.len() {
        let i = pieces.len();
        let score = cur
            .f32()
            .ok_or_else(|| err(format!("token {i}: truncated score")))?;
        if !score.is_finite() {
            return Err(err(format!("token {i}: score {score} is not finite")));
        }
        let len = cur
            .i32()
            .ok_or_else(|| err(format!("token {i}: truncated length")))?;
        if len < 0 || len as usize > MAX_PIECE_BYTES || len as usize > bytes.len() - cur.pos {
            return Err(err(format!(
                "token {i}: length {len} does not fit in the file ({} bytes left)",
                bytes.len() - cur.pos
            )));
        }
        let raw = &bytes[cur.pos..cur.pos + len as usize];
        cur.pos += len as usize;
        let text = std::str::from_utf8(raw)
            .map_err(|e| err(format!("token {i}: piece is not UTF-8 ({e})")))?;
        pieces.push(normalise_piece(text));
        scores.push(score);
    }
    if pieces.len() < 3 {
        return Err(err(format!(
            "only {} tokens; need at least <unk>, <s>, </s>",
            pieces.len()
        )));
    }
    Ok(Llama2cVocab {
        max_token_length: max_len as u32,
        pieces,
        scores,
    })
}

/// Stored form → SentencePiece piece ("\n<s>\n" → "<s>", ' ' → "▁").
fn normalise_piece(text: &str) -> String {
    match text {
        "\n<s>\n" => "<s>".into(),
        "\n</s>\n" => "</s>".into(),
        _ => text.replace(' ', "\u{2581}"),
    }
}

impl Llama2cVocab {
    /// Token kinds as llama2.c assumes them: 0 unknown, 1 BOS, 2 EOS, `<0xXX>` bytes.
    pub fn kinds(&self) -> Vec<PieceKind> {
        self.pieces
            .iter()
            .enumerate()
            .map(|(id, p)| match id {
                0 => PieceKind::Unknown,
                1 | 2 => PieceKind::Control,
                _ if parse_byte_piece(p).is_some() => PieceKind::Byte,
                _ => PieceKind::Normal,
            })
            .collect()
    }

    pub fn into_model(self, path: &Path) -> Result<SpmModel> {
        let kinds = self.kinds();
        SpmModel::new(self.pieces, self.scores, kinds, 0, true)
            .map_err(|m| DataError::format(path, m))
    }

    /// The file bytes llama2.c reads (inverse of [`parse`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let max = self
            .pieces
            .iter()
            .map(|p| stored_piece(p).len())
            .max()
            .unwrap_or(0)
            .max(self.max_token_length as usize);
        out.extend_from_slice(&(max as i32).to_le_bytes());
        for (p, s) in self.pieces.iter().zip(&self.scores) {
            let stored = stored_piece(p);
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
            out.extend_from_slice(stored.as_bytes());
        }
        out
    }
}

fn stored_piece(p: &str) -> String {
    match p {
        "<s>" => "\n<s>\n".into(),
        "</s>" => "\n</s>\n".into(),
        _ => p.replace('\u{2581}', " "),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take4(&mut self) -> Option<[u8; 4]> {
        let b: [u8; 4] = self.bytes.get(self.pos..self.pos + 4)?.try_into().ok()?;
        self.pos += 4;
        Some(b)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take4().map(i32::from_le_bytes)
    }
    fn f32(&mut self) -> Option<f32> {
        self.take4().map(f32::from_le_bytes)
    }
}
