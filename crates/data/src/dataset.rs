//! Reading an ingested dataset: for each split the token stream, the loss mask (if any) and
//! the document boundaries. This is what `train` consumes.

use crate::error::{DataError, Result};
use crate::manifest::{Dtype, Manifest, SplitInfo, FORMAT_NAME, MANIFEST_FILE};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One split (train or val) loaded in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub tokens: Vec<u32>,
    /// 1 = the token is a training target, 0 = context only. None = every token is trained.
    pub mask: Option<Vec<u8>>,
    /// Start offset of each document in `tokens` (ascending; the first is 0).
    pub doc_starts: Vec<u64>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    pub fn num_documents(&self) -> usize {
        self.doc_starts.len()
    }
    /// Token range of document `i`.
    pub fn document(&self, i: usize) -> Option<Range<usize>> {
        let start = *self.doc_starts.get(i)? as usize;
        let end = self
            .doc_starts
            .get(i + 1)
            .map(|&e| e as usize)
            .unwrap_or(self.tokens.len());
        Some(start..end)
    }
    pub fn documents(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.doc_starts.len()).filter_map(|i| self.document(i))
    }
    /// Number of tokens that count for the loss.
    pub fn trained_tokens(&self) -> usize {
        match &self.mask {
            Some(m) => m.iter().filter(|&&b| b != 0).count(),
            None => self.tokens.len(),
        }
    }
}

/// An ingested dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub train: Split,
    pub val: Split,
}

impl Dataset {
    /// Opens `dir` (written by `neuralforge ingest`), checking every file against the manifest.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let manifest = read_manifest(dir)?;
        let train = load_split(dir, &manifest, "train")?;
        let val = load_split(dir, &manifest, "val")?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            train,
            val,
        })
    }

    pub fn split(&self, name: &str) -> Option<&Split> {
        match name {
            "train" => Some(&self.train),
            "val" => Some(&self.val),
            _ => None,
        }
    }
    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size
    }
    pub fn dtype(&self) -> Dtype {
        self.manifest.dtype
    }
    pub fn has_mask(&self) -> bool {
        self.manifest.has_mask
    }
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| DataError::format(&path, format!("not a dataset manifest: {e}")))?;
    if m.format != FORMAT_NAME {
        return Err(DataError::format(
            &path,
            format!("format is {:?}, expected {FORMAT_NAME:?}", m.format),
        ));
    }
    if m.version != crate::manifest::FORMAT_VERSION {
        return Err(DataError::format(
            &path,
            format!("version {} is not supported", m.version),
        ));
    }
    Ok(m)
}

/// A file name from the manifest must stay inside the dataset folder.
fn inside(dir: &Path, name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && !name.contains('/')
        && !name.contains('\\')
        && name != ".."
        && name != ".";
    if !ok {
        return Err(DataError::format(
            dir.join(MANIFEST_FILE),
            format!("file name {name:?} is not a plain name in the dataset folder"),
        ));
    }
    Ok(dir.join(name))
}

fn read_exact_len(path: &Path, expected: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.len() != expected {
        return Err(DataError::format(
            path,
            format!("{} bytes, the manifest says {expected}", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

fn load_split(dir: &Path, m: &Manifest, name: &str) -> Result<Split> {
    let Some(info) = m.splits.get(name) else {
        return Ok(Split::default());
    };
    let SplitInfo {
        tokens: total,
        documents,
        index,
        shards,
    } = info;
    let sum: u64 = shards.iter().map(|s| s.tokens).sum();
    if sum != *total {
        return Err(DataError::format(
            dir.join(MANIFEST_FILE),
            format!("split {name}: shards hold {sum} tokens but the split says {total}"),
        ));
    }
    let width = m.dtype.bytes();
    let mut tokens = Vec::with_capacity(*total as usize);
    let mut mask = m.has_mask.then(|| Vec::with_capacity(*total as usize));
    for s in shards {
        let path = inside(dir, &s.file)?;
        let bytes = read_exact_len(&path, s.tokens * width as u64)?;
        match m.dtype {
            Dtype::Uint16 => tokens.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            Dtype::Uint32 => tokens.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
        if let Some(mask) = mask.as_mut() {
            let mname = s.mask.as_deref().ok_or_else(|| {
                DataError::format(
                    dir.join(MANIFEST_FILE),
                    format!("shard {} has no mask but has_mask is true", s.file),
                )
            })?;
            let mpath = inside(dir, mname)?;
            mask.extend(read_exact_len(&mpath, s.tokens)?);
        }
    }
    if let Some(bad) = tokens.iter().position(|&t| t as usize >= m.vocab_size) {
        return Err(DataError::format(
            dir.join(name),
            format!(
                "token {} at offset {bad} is outside the vocabulary of {}",
                tokens[bad], m.vocab_size
            ),
        ));
    }
    let ipath = inside(dir, index)?;
    let ibytes = read_exact_len(&ipath, documents * 8)?;
    let doc_starts: Vec<u64> = ibytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let ordered = doc_starts.windows(2).all(|w| w[0] <= w[1]);
    let in_range = doc_starts.first().is_none_or(|&f| f == 0)
        && doc_starts.last().is_none_or(|&l| l <= *total);
    if !ordered || !in_range {
        return Err(DataError::format(
            &ipath,
            "document offsets are not ascending from 0 within the split",
        ));
    }
    Ok(Split {
        tokens,
        mask,
        doc_starts,
    })
}
