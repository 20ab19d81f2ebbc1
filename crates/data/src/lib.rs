//! Text in, token ids out: tokenizers, chat templates, ingest, shards and batches.

pub mod windows;
