//! Text in, token ids out: tokenizers, chat templates, ingest, shards and batches.

pub mod chat;
pub mod dataset;
pub mod error;
pub mod ingest;
pub mod manifest;
pub mod tokenizer;
pub mod windows;

pub use chat::{ChatMessage, ChatTemplate, RenderedChat};
pub use dataset::{Dataset, Split};
pub use error::{DataError, Result};
pub use tokenizer::Tokenizer;
