//! The generation loop: prefill the prompt, then sample and decode until a stop condition.
//! Text-level concerns (detokenising, stop strings) belong to the caller's callback.

use super::sampler::Sampler;
use super::session::{InferError, InferenceSession};
use std::ops::ControlFlow;

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// New tokens at most (0 = until EOS or the context is full).
    pub max_tokens: usize,
    /// Any of these ends generation; the EOS token itself is not reported.
    pub eos_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    ContextFull,
    /// The callback asked to stop (e.g. a stop string appeared).
    Caller,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Caller => "stop",
        }
    }
}

/// Runs `prompt` through `session` (appending to what it holds) and generates; each new token
/// is passed to `on_token` with the logits it was drawn from; the callback may stop the loop.
/// Returns the new tokens and why it ended.
pub fn generate(
    session: &mut InferenceSession<'_>,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32, &[f32]) -> ControlFlow<()>,
) -> Result<(Vec<u32>, StopReason), InferError> {
    session.prefill(prompt)?;
    for &t in prompt {
        sampler.accept(t);
    }
    let mut out = Vec::new();
    loop {
        let token = sampler.sample(session.logits());
        if opts.eos_ids.contains(&token) {
            return Ok((out, StopReason::Eos));
        }
        out.push(token);
        if on_token(token, session.logits()).is_break() {
            return Ok((out, StopReason::Caller));
        }
        if opts.max_tokens != 0 && out.len() >= opts.max_tokens {
            return Ok((out, StopReason::MaxTokens));
        }
        if session.position() >= session.capacity() {
            return Ok((out, StopReason::ContextFull));
        }
        session.decode(token)?;
    }
}
