//! Text in, token ids out: tokenizers, chat templates, ingest, shards and batches.

pub mod error;
pub mod tokenizer;
pub mod windows;

pub use error::{DataError, Result};
pub use tokenizer::Tokenizer;
