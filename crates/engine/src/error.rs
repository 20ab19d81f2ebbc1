//! The engine's error type: every failure names what was wrong with which input.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("token id {id} at position {pos} is not below the vocabulary size {vocab}")]
    TokenOutOfRange { id: u32, pos: usize, vocab: usize },
    #[error("{field} must be {rule}, got {value}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("sizes overflow: {0}")]
    Overflow(&'static str),
    #[error("thread pool: {0}")]
    Threads(String),
    #[error("{0}")]
    Unsupported(String),
}
