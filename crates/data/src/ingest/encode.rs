//! Documents to token ids and loss masks. Masks come from byte spans of the text: a token is
//! trained when it overlaps a completion / assistant span, so the mask is decided on the exact
//! tokenisation of the whole rendered text (no boundary effects from encoding pieces).

use super::extract::Document;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{DataError, Result};
use crate::tokenizer::train::CHATML_TEMPLATE;
use crate::Tokenizer;
use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedDoc {
    pub tokens: Vec<u32>,
    /// Per token 1 (trained) or 0; empty means every token is trained.
    pub mask: Vec<u8>,
}

pub struct Encoder<'a> {
    tok: &'a Tokenizer,
    /// A template that does not compile only fails the documents that need it.
    template: std::result::Result<ChatTemplate, String>,
    /// False when the tokenizer has no chat template (ChatML is used for conversations).
    pub has_model_template: bool,
    train_on_prompt: bool,
}

/// How a prompt and its completion are joined without a chat template.
fn join_pair(prompt: &str, completion: &str) -> (String, usize) {
    let sep = if prompt.is_empty()
        || prompt.ends_with(char::is_whitespace)
        || completion.starts_with(char::is_whitespace)
    {
        ""
    } else {
        "\n"
    };
    let text = format!("{prompt}{sep}{completion}");
    (text, prompt.len() + sep.len())
}

impl<'a> Encoder<'a> {
    pub fn new(tok: &'a Tokenizer, train_on_prompt: bool) -> Result<Encoder<'a>> {
        let piece = |id: Option<u32>| id.and_then(|i| tok.id_to_piece(i)).unwrap_or_default();
        let (src, has) = match tok.chat_template() {
            Some(t) => (t, true),
            None => (CHATML_TEMPLATE, false),
        };
        Ok(Encoder {
            template: ChatTemplate::new(src, &piece(tok.bos_id()), &piece(tok.eos_id()))
                .map_err(|e| e.to_string()),
            has_model_template: has,
            tok,
            train_on_prompt,
        })
    }

    pub fn encode(&self, doc: &Document) -> Result<EncodedDoc> {
        let (mut tokens, mut mask, templated) = match doc {
            Document::Text(t) => (self.tok.encode(t, false)?, Vec::new(), false),
            Document::Pair { prompt, completion } if self.has_model_template => {
                let msgs = [
                    ChatMessage::new("user", prompt.as_str()),
                    ChatMessage::new("assistant", completion.as_str()),
                ];
                let (t, m) = self.chat(&msgs)?;
                (t, m, true)
            }
            Document::Pair { prompt, completion } => {
                let (text, cut) = join_pair(prompt, completion);
                let span = cut..text.len();
                let (t, m) = self.spans(&text, std::slice::from_ref(&span))?;
                (t, m, false)
            }
            Document::Chat(msgs) => {
                let (t, m) = self.chat(msgs)?;
                (t, m, true)
            }
        };
        if let Some(bos) = self.tok.bos_id().filter(|_| self.tok.add_bos()) {
            if tokens.first() != Some(&bos) {
                tokens.insert(0, bos);
                if !mask.is_empty() {
                    mask.insert(0, 0);
                }
            }
        }
        if let Some(eos) = self.tok.eos_id() {
            // A rendered chat usually ends with its own end-of-turn token (+ newline).
            let already = templated && tokens.iter().rev().take(2).any(|&t| t == eos);
            if !already {
                tokens.push(eos);
                if !mask.is_empty() {
                    mask.push(u8::from(!templated));
                }
            }
        }
        if self.train_on_prompt {
            mask.clear();
        }
        Ok(EncodedDoc { tokens, mask })
    }

    fn chat(&self, msgs: &[ChatMessage]) -> Result<(Vec<u32>, Vec<u8>)> {
        let template = self
            .template
            .as_ref()
            .map_err(|e| DataError::Template(format!("the tokenizer's chat template: {e}")))?;
        let r = template.render_with_spans(msgs)?;
        self.spans(&r.text, &r.assistant_spans)
    }

    /// Tokens of `text` with mask 1 for tokens that overlap one of `spans`.
    fn spans(&self, text: &str, spans: &[Range<usize>]) -> Result<(Vec<u32>, Vec<u8>)> {
        let enc = self.tok.encode_with_offsets(text)?;
        let mut tokens = Vec::with_capacity(enc.len());
        let mut mask = Vec::with_capacity(enc.len());
        for (id, start, end) in enc {
            tokens.push(id);
            // Overlap, so a token that carries the space before the content still counts.
            mask.push(u8::from(
                spans.iter().any(|s| start < s.end && end > s.start),
            ));
        }
        Ok((tokens, mask))
    }
}
