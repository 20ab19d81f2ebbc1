//! Streaming detokenisation: emits text as tokens arrive but holds back bytes that do not yet
//! form a whole UTF-8 character (an emoji split over byte-fallback tokens, say).

use super::Tokenizer;

/// Give up waiting for a character to complete after this many tokens (invalid output).
const MAX_PENDING: usize = 8;

pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the window that is decoded again each time (context for spacing rules).
    prefix: usize,
    /// End of the text already emitted.
    read: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds a token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let at_start = self.prefix == 0;
        let before = self
            .tok
            .decode_fragment(&self.ids[self.prefix..self.read], at_start);
        let now = self.tok.decode_fragment(&self.ids[self.prefix..], at_start);
        let pending = self.ids.len() - self.read;
        if now.ends_with('\u{FFFD}') && pending < MAX_PENDING {
            return None;
        }
        let out = match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            // Spacing rules changed earlier text; emit what is new by length.
            None => now.get(before.len()..).unwrap_or_default().to_string(),
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        (!out.is_empty()).then_some(out)
    }

    /// Text still held back (incomplete characters become U+FFFD).
    pub fn flush(&mut self) -> Option<String> {
        if self.read == self.ids.len() {
            return None;
        }
        let at_start = self.prefix == 0;
        let before = self
            .tok
            .decode_fragment(&self.ids[self.prefix..self.read], at_start);
        let now = self.tok.decode_fragment(&self.ids[self.prefix..], at_start);
        self.prefix = self.read;
        self.read = self.ids.len();
        let out = now.get(before.len()..).unwrap_or_default().to_string();
        (!out.is_empty()).then_some(out)
    }
}
