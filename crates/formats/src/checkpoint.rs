//! Training checkpoints: atomic folders, trainer state, the `latest` pointer.
