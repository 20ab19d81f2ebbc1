//! Ingested shard folders (`neuralforge ingest`): the token stream and loss mask of a split.

use super::data_source::{TokenData, EXIT_DATA};
use crate::output::Coded;
use std::path::Path;

/// Reads split `name` ("train" or "val") of an ingested folder; `None` when that split is empty.
pub fn load_ingested(dir: &Path, name: &str) -> anyhow::Result<Option<TokenData>> {
    if !dir.join(data::manifest::MANIFEST_FILE).is_file() {
        return Err(Coded::new(
            "data",
            EXIT_DATA,
            format!(
                "{} is a folder without {}: point --data at a folder made by \
                 `neuralforge ingest`, a token file, or a .txt/.jsonl file",
                dir.display(),
                data::manifest::MANIFEST_FILE
            ),
        )
        .into());
    }
    let ds = data::Dataset::open(dir)
        .map_err(|e| Coded::new("data", EXIT_DATA, format!("dataset {}: {e}", dir.display())))?;
    let Some(split) = ds.split(name) else {
        return Ok(None);
    };
    if split.is_empty() {
        return Ok(None);
    }
    Ok(Some(TokenData {
        source: format!(
            "{} tokens ({} trained) in {} documents of the {name} split of {}",
            split.len(),
            split.trained_tokens(),
            split.num_documents(),
            dir.display()
        ),
        tokens: split.tokens.clone(),
        mask: split.mask.clone(),
    }))
}
