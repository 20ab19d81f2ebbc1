//! `manifest.json` of an ingested dataset (see docs/data.md): what was ingested with which
//! tokenizer and settings, where each split's tokens, masks and document index live, and for
//! every source file its content hash, token count and token ranges.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_NAME: &str = "neuralforge-tokens";
pub const FORMAT_VERSION: u32 = 1;
pub const SPLITS: [&str; 2] = ["train", "val"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Uint16,
    Uint32,
}

impl Dtype {
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::Uint16
        } else {
            Dtype::Uint32
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            Dtype::Uint16 => 2,
            Dtype::Uint32 => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub dtype: Dtype,
    pub vocab_size: usize,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub tokenizer: TokenizerInfo,
    pub settings: Settings,
    /// Whether `.mask` files exist (some document has tokens that are not trained on).
    pub has_mask: bool,
    pub splits: BTreeMap<String, SplitInfo>,
    pub files: Vec<FileEntry>,
    pub skipped: SkipCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// What `--tokenizer` named.
    pub source: String,
    /// sha256 of the tokenizer's `tokenizer.json` form; a change re-ingests everything.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub val_split: f64,
    pub seed: u64,
    pub train_on_prompt: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub tokens: u64,
    pub documents: u64,
    /// Little-endian u64 start offset of each document in the split's token stream.
    pub index: String,
    pub shards: Vec<ShardInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Token file (raw little-endian `dtype`).
    pub file: String,
    /// One byte per token: 1 = trained on (a loss target), 0 = context only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    /// text, markdown, rst, html, csv, code, json, jsonl
    pub kind: String,
    /// text, prompt_completion, question_answer, alpaca, messages
    pub format: String,
    pub documents: u64,
    pub tokens: u64,
    pub warnings: u64,
    pub splits: BTreeMap<String, FileSplit>,
}

/// Where one file's documents landed in one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSplit {
    /// [first, end) document numbers in the split.
    pub documents: [u64; 2],
    /// [first, end) token offsets in the split's stream.
    pub tokens: [u64; 2],
    pub shards: Vec<ShardRange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRange {
    pub shard: usize,
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub hidden: u64,
    pub binary: u64,
    pub empty: u64,
    pub unsupported: u64,
}

pub fn shard_name(split: &str, i: usize) -> String {
    format!("{split}-{i:05}.bin")
}

pub fn mask_name(split: &str, i: usize) -> String {
    format!("{split}-{i:05}.mask")
}

pub fn index_name(split: &str) -> String {
    format!("{split}.idx")
}
