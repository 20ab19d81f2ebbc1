//! Helpers shared by the CLI integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `../shared` (or `NEURALFORGE_SHARED`); None, after saying so, on a machine without it.
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

/// A fresh, empty temporary folder unique to this test process.
pub fn tmp(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary; returns (success, stdout, stderr).
pub fn nf(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// `DIR/tokens.bin`: `n` u16 ids with learnable structure, a counter (`i * step % period`)
/// with a few random ids below 512 mixed in (an LCG seeded with `seed`).
pub fn counter_tokens(dir: &Path, n: usize, seed: u64, step: u64, period: u64) -> PathBuf {
    let mut x = seed;
    let mut bytes = Vec::with_capacity(n * 2);
    for i in 0..n as u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let t = if (x >> 60) == 0 {
            (x >> 33) % 512
        } else {
            (i * step) % period
        };
        bytes.extend_from_slice(&(t as u16).to_le_bytes());
    }
    let p = dir.join("tokens.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The shared SmolLM2 Q4_1 GGUF, relative to the shared folder.
pub const SMOLLM2_Q4_1: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// transformers' reference for SmolLM2 (`fixtures/smollm2/reference.json`).
pub fn smollm2_reference(shared: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(shared.join("fixtures/smollm2/reference.json"))
            .expect("reference.json"),
    )
    .expect("reference.json is JSON")
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
