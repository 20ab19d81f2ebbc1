//! Helpers shared by the data crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared data folder, or None (the test then prints "skipped" and passes).
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("NEURALFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: shared data not found");
        None
    }
}

pub fn smollm_gguf() -> Option<PathBuf> {
    let p = shared()?.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        println!("skipped: shared data not found");
        None
    }
}

/// A fresh empty temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nf-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
