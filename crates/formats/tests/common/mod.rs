//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// /work/shared (or $NEURALFORGE_SHARED); None (after saying so) when it is missing.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var("NEURALFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: shared data not found");
        None
    }
}

/// (dim, hidden, layers, heads, kv heads, vocab, max seq) of a model, to compare in one assert.
pub fn shape(c: &engine::ModelConfig) -> [usize; 7] {
    [
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        c.max_seq_len,
    ]
}

/// A fresh, empty temporary folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of a few tokens through the engine (the proof that a conversion kept the maths).
pub fn logits(p: &engine::Params, tokens: &[u32]) -> Vec<f32> {
    engine::model::logits(p, None, tokens, 1, tokens.len()).unwrap()
}
