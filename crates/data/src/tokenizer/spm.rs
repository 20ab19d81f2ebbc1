//! SentencePiece BPE (the Llama 2 / llama2.c tokenizer): repeatedly merge the adjacent pair whose
//! concatenation is the highest-scoring piece (leftmost on ties), then map symbols to ids with
//! byte fallback. The `tokenizers` crate ranks merges by a fixed list instead of by score, which
//! cannot express the leftmost tie-break exactly, so this model is implemented here.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// What a vocabulary entry is (the SentencePiece / GGUF token types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceKind {
    /// GGUF `tokenizer.ggml.token_type` codes (1 normal, 2 unknown, 3 control, 4 user defined,
    /// 5 unused, 6 byte).
    pub fn from_gguf(code: i32) -> PieceKind {
        match code {
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            _ => PieceKind::Normal,
        }
    }

    pub fn is_special(self) -> bool {
        matches!(self, PieceKind::Control | PieceKind::Unknown)
    }
}

/// A SentencePiece BPE vocabulary with scores.
#[derive(Debug, Clone)]
pub struct SpmModel {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<PieceKind>,
    lookup: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    unk_id: u32,
    add_dummy_prefix: bool,
}

/// One token of an encoding with the byte range of the input text it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpmToken {
    pub id: u32,
    pub start: usize,
    pub end: usize,
}

const SPACE_MARK: char = '\u{2581}';

impl SpmModel {
    /// Builds a model; pieces use "▁" for spaces and `<0xXX>` for byte-fallback entries.
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<PieceKind>,
        unk_id: u32,
        add_dummy_prefix: bool,
    ) -> Result<SpmModel, String> {
        if pieces.len() != scores.len() || pieces.len() != kinds.len() {
            return Err(format!(
                "{} pieces but {} scores and {} token types",
                pieces.len(),
                scores.len(),
                kinds.len()
            ));
        }
        if pieces.is_empty() || pieces.len() > u32::MAX as usize {
            return Err(format!("vocabulary size {} is not usable", pieces.len()));
        }
        if unk_id as usize >= pieces.len() {
            return Err(format!(
                "unknown-token id {unk_id} is outside the vocabulary"
            ));
        }
        let mut lookup = HashMap::with_capacity(pieces.len());
        let mut byte_ids = [None; 256];
        for (id, piece) in pieces.iter().enumerate() {
            let id = id as u32;
            if kinds[id as usize] == PieceKind::Byte {
                if let Some(b) = parse_byte_piece(piece) {
                    byte_ids[b as usize] = Some(id);
                }
                continue;
            }
            // First occurrence wins, as in SentencePiece.
            lookup.entry(piece.clone()).or_insert(id);
        }
        Ok(SpmModel {
            pieces,
            scores,
            kinds,
            lookup,
            byte_ids,
            unk_id,
            add_dummy_prefix,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    pub fn kinds(&self) -> &[PieceKind] {
        &self.kinds
    }

    pub fn kind(&self, id: u32) -> Option<PieceKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    pub fn add_dummy_prefix(&self) -> bool {
        self.add_dummy_prefix
    }

    pub fn has_byte_fallback(&self) -> bool {
        self.byte_ids.iter().all(Option::is_some)
    }

    /// Id of a piece that can take part in merges (normal or user defined).
    fn mergeable(&self, s: &str) -> Option<u32> {
        let id = *self.lookup.get(s)?;
        match self.kinds[id as usize] {
            PieceKind::Normal | PieceKind::UserDefined => Some(id),
            _ => None,
        }
    }

    /// Encodes plain text (no special-token parsing), with the dummy-prefix space when
    /// `dummy_prefix` is set and the model asks for it. Offsets are byte offsets into `text`.
    pub fn encode(&self, text: &str, dummy_prefix: bool) -> Vec<SpmToken> {
        if text.is_empty() {
            return Vec::new();
        }
        // Normalise: optional leading "▁", spaces become "▁"; remember each char's source range.
        let mut norm = String::with_capacity(text.len() + 3);
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len() + 1);
        if dummy_prefix && self.add_dummy_prefix {
            symbols.push(Symbol::new(0, SPACE_MARK.len_utf8(), 0, 0));
            norm.push(SPACE_MARK);
        }
        for (pos, c) in text.char_indices() {
            let start = norm.len();
            let mapped = if c == ' ' { SPACE_MARK } else { c };
            norm.push(mapped);
            symbols.push(Symbol::new(start, norm.len(), pos, pos + c.len_utf8()));
        }
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = if i + 1 < n { Some(i + 1) } else { None };
        }

        let mut agenda = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            self.push_pair(&norm, &symbols, i, i + 1, &mut agenda);
        }
        while let Some(cand) = agenda.pop() {
            let (l, r) = (cand.left, cand.right);
            // Skip stale candidates: a side was merged away or changed length since.
            if symbols[l].dead
                || symbols[r].dead
                || symbols[l].next != Some(r)
                || symbols[r].end - symbols[l].start != cand.len
            {
                continue;
            }
            symbols[l].end = symbols[r].end;
            symbols[l].src_end = symbols[r].src_end;
            symbols[l].next = symbols[r].next;
            symbols[r].dead = true;
            if let Some(nx) = symbols[r].next {
                symbols[nx].prev = Some(l);
                self.push_pair(&norm, &symbols, l, nx, &mut agenda);
            }
            if let Some(pv) = symbols[l].prev {
                self.push_pair(&norm, &symbols, pv, l, &mut agenda);
            }
        }

        let mut out = Vec::with_capacity(n);
        let mut cur = if n > 0 { Some(0) } else { None };
        while let Some(i) = cur {
            let s = &symbols[i];
            let piece = &norm[s.start..s.end];
            match self.lookup.get(piece).copied().filter(|&id| {
                !matches!(
                    self.kinds[id as usize],
                    PieceKind::Unused | PieceKind::Control
                )
            }) {
                Some(id) => out.push(SpmToken {
                    id,
                    start: s.src_start,
                    end: s.src_end,
                }),
                None => self.fallback(piece, s, &mut out),
            }
            cur = s.next;
        }
        out
    }

    /// An unknown symbol becomes its UTF-8 bytes (`<0xXX>` pieces) or the unknown token.
    fn fallback(&self, piece: &str, s: &Symbol, out: &mut Vec<SpmToken>) {
        // SentencePiece falls back on the normalised bytes (a "▁" stays the bytes of "▁").
        if piece.bytes().all(|b| self.byte_ids[b as usize].is_some()) {
            for b in piece.bytes() {
                if let Some(id) = self.byte_ids[b as usize] {
                    out.push(SpmToken {
                        id,
                        start: s.src_start,
                        end: s.src_end,
                    });
                }
            }
        } else {
            out.push(SpmToken {
                id: self.unk_id,
                start: s.src_start,
                end: s.src_end,
            });
        }
    }

    fn push_pair(
        &self,
        norm: &str,
        symbols: &[Symbol],
        l: usize,
        r: usize,
        agenda: &mut BinaryHeap<Candidate>,
    ) {
        let (start, end) = (symbols[l].start, symbols[r].end);
        if let Some(id) = self.mergeable(&norm[start..end]) {
            agenda.push(Candidate {
                score: self.scores[id as usize],
                left: l,
                right: r,
                len: end - start,
            });
        }
    }

    /// The bytes a token stands for in decoded text ("▁" → space, `<0xXX>` → that byte,
    /// control tokens → nothing unless `with_special`).
    pub fn token_bytes(&self, id: u32, with_special: bool) -> Vec<u8> {
        let Some(piece) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        match self.kinds[id as usize] {
            PieceKind::Byte => parse_byte_piece(piece).map(|b| vec![b]).unwrap_or_default(),
            PieceKind::Control | PieceKind::Unknown if !with_special => Vec::new(),
            _ => piece.replace(SPACE_MARK, " ").into_bytes(),
        }
    }
}

/// `<0xAB>` → 0xAB.
pub fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[derive(Debug, Clone)]
struct Symbol {
    start: usize,
    end: usize,
    src_start: usize,
    src_end: usize,
    prev: Option<usize>,
    next: Option<usize>,
    dead: bool,
}

impl Symbol {
    fn new(start: usize, end: usize, src_start: usize, src_end: usize) -> Symbol {
        Symbol {
            start,
            end,
            src_start,
            src_end,
            prev: None,
            next: None,
            dead: false,
        }
    }
}

/// A merge candidate; the heap pops the highest score, then the leftmost position.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SpmModel {
        let pieces = ["<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁ab", "aa"];
        let mut p: Vec<String> = pieces.iter().map(|s| s.to_string()).collect();
        let mut kinds = vec![PieceKind::Unknown, PieceKind::Control, PieceKind::Control];
        kinds.extend(std::iter::repeat_n(PieceKind::Normal, 6));
        let mut scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        for b in 0..=255u8 {
            p.push(format!("<0x{b:02X}>"));
            kinds.push(PieceKind::Byte);
            scores.push(0.0);
        }
        SpmModel::new(p, scores, kinds, 0, true).unwrap()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let m = tiny();
        let ids: Vec<u32> = m.encode("ab", true).iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![7]);
        let ids: Vec<u32> = m.encode("aaa", false).iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![8, 4]); // leftmost on ties
        let toks = m.encode("é", false);
        assert_eq!(toks.len(), 2);
        assert_eq!(toks[0].id, 9 + 0xC3);
        assert_eq!(m.token_bytes(toks[1].id, false), vec![0xA9]);
        assert!(m.encode("", true).is_empty());
    }
}
