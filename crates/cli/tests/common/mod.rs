//! Helpers shared by the CLI integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;
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
