//! Ingested shard folders (`neuralforge ingest`): the token stream and loss mask of a split.

use super::data_source::{TokenData, EXIT_DATA};
use crate::output::Coded;
use std::path::Path;

/// Reads the training split of an ingested folder.
pub fn load_ingested(dir: &Path) -> anyhow::Result<TokenData> {
    let manifest = dir.join("manifest.json");
    if !manifest.is_file() {
        return Err(Coded::new(
            "data",
            EXIT_DATA,
            format!(
                "{} is a folder without manifest.json: point --data at a folder made by \
                 `neuralforge ingest`, a token file, or a .txt/.jsonl file",
                dir.display()
            ),
        )
        .into());
    }
    Err(Coded::new(
        "data",
        EXIT_DATA,
        format!(
            "{}: reading ingested datasets is not available in this build yet (the data \
             crate has no dataset reader); pass the source .txt/.jsonl or a token file",
            dir.display()
        ),
    )
    .into())
}
