//! `ingest`: files and folders → documents → token ids + loss masks → shards and a manifest.
//! Parallel over files and over the documents of each file (rayon). With `incremental`, files
//! whose content hash is already in the previous manifest are copied from the old shards
//! instead of being tokenised again.

mod discover;
pub mod encode;
pub mod extract;
mod write;

use crate::dataset::{read_manifest, Dataset, Split};
use crate::error::{DataError, Result};
use crate::manifest::{
    Dtype, FileEntry, FileSplit, Manifest, Settings, SkipCounts, TokenizerInfo, FORMAT_NAME,
    FORMAT_VERSION, MANIFEST_FILE, SPLITS,
};
use crate::Tokenizer;
use encode::{EncodedDoc, Encoder};
use extract::{Document, FileClass, Warning};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub sources: Vec<PathBuf>,
    pub out: PathBuf,
    /// What `--tokenizer` named (recorded in the manifest).
    pub tokenizer_source: String,
    /// Fraction of documents that go to the validation split.
    pub val_split: f64,
    pub seed: u64,
    pub incremental: bool,
    pub strict: bool,
    pub train_on_prompt: bool,
    /// Tokens per shard file.
    pub shard_tokens: u64,
}

impl IngestOptions {
    pub fn new(sources: Vec<PathBuf>, out: PathBuf) -> IngestOptions {
        IngestOptions {
            sources,
            out,
            tokenizer_source: String::new(),
            val_split: 0.0,
            seed: 0,
            incremental: false,
            strict: false,
            train_on_prompt: false,
            shard_tokens: 1 << 27,
        }
    }
}

/// Reported as each file is done (from worker threads).
#[derive(Debug, Clone)]
pub struct FileEvent {
    pub file: String,
    pub tokens: u64,
    /// True when the file was unchanged and its tokens were reused.
    pub reused: bool,
    /// Number of files found (for a progress bar); skipped files are not reported.
    pub total_files: usize,
}

#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: String,
    pub kind: String,
    pub format: String,
    pub documents: u64,
    pub tokens: u64,
    pub reused: bool,
}

#[derive(Debug, Clone)]
pub struct IngestReport {
    pub files: Vec<FileReport>,
    /// Files tokenised in this run.
    pub new_files: u64,
    /// Files unchanged since the previous run (tokens reused).
    pub unchanged: u64,
    pub skipped: SkipCounts,
    /// "file:line: message" for every problem found.
    pub warnings: Vec<String>,
    pub total_tokens: u64,
    pub shards: u64,
    pub manifest: PathBuf,
    pub split_tokens: BTreeMap<String, u64>,
    pub split_documents: BTreeMap<String, u64>,
    pub has_mask: bool,
    /// True when conversations were rendered with ChatML because the tokenizer has no template.
    pub used_fallback_template: bool,
}

/// One processed file: its documents, already split.
struct FileData {
    display: String,
    sha256: String,
    bytes: u64,
    kind: String,
    format: String,
    warnings: Vec<Warning>,
    splits: [Vec<EncodedDoc>; 2],
    reused: bool,
}

enum Outcome {
    Data(Box<FileData>),
    Skipped(SkipKind, String, Option<String>),
}

enum SkipKind {
    Binary,
    Empty,
    Unsupported,
}

pub fn ingest(
    tok: &Tokenizer,
    opts: &IngestOptions,
    on_file: &(dyn Fn(&FileEvent) + Sync),
) -> Result<IngestReport> {
    if !(0.0..1.0).contains(&opts.val_split) {
        return Err(DataError::Invalid(format!(
            "--val-split {} must be at least 0 and below 1",
            opts.val_split
        )));
    }
    if opts.sources.is_empty() {
        return Err(DataError::Invalid("no sources given".into()));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| DataError::io(&opts.out, e))?;
    let found = discover::discover(&opts.sources, &opts.out)?;
    let fingerprint = tok.fingerprint()?;
    let settings = Settings {
        val_split: opts.val_split,
        seed: opts.seed,
        train_on_prompt: opts.train_on_prompt,
    };
    let cache = if opts.incremental {
        previous(&opts.out, &fingerprint, &settings)
    } else {
        HashMap::new()
    };
    let encoder = Encoder::new(tok, opts.train_on_prompt)?;
    let total_files = found.files.len();

    let outcomes: Vec<Result<Outcome>> = found
        .files
        .par_iter()
        .map(|f| {
            let out = process(&f.path, &f.display, &encoder, &cache, opts)?;
            if let Outcome::Data(d) = &out {
                on_file(&FileEvent {
                    file: d.display.clone(),
                    tokens: d
                        .splits
                        .iter()
                        .flatten()
                        .map(|d| d.tokens.len() as u64)
                        .sum(),
                    reused: d.reused,
                    total_files,
                });
            }
            Ok(out)
        })
        .collect();

    let mut skipped = SkipCounts {
        hidden: found.hidden,
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let mut uses_chat = false;
    for o in outcomes {
        match o? {
            Outcome::Data(d) => {
                for w in &d.warnings {
                    warnings.push(match w.line {
                        Some(l) => format!("{}:{l}: {}", d.display, w.message),
                        None => format!("{}: {}", d.display, w.message),
                    });
                }
                uses_chat |= matches!(d.format.as_str(), "messages")
                    || (encoder.has_model_template
                        && matches!(
                            d.format.as_str(),
                            "prompt_completion" | "question_answer" | "alpaca"
                        ));
                files.push(*d);
            }
            Outcome::Skipped(kind, display, why) => {
                match kind {
                    SkipKind::Binary => skipped.binary += 1,
                    SkipKind::Empty => skipped.empty += 1,
                    SkipKind::Unsupported => skipped.unsupported += 1,
                }
                if let Some(why) = why {
                    warnings.push(format!("{display}: {why}"));
                }
            }
        }
    }
    if opts.strict && !warnings.is_empty() {
        let shown: Vec<&str> = warnings.iter().take(20).map(String::as_str).collect();
        return Err(DataError::Invalid(format!(
            "--strict: {} problem(s) in the input:\n{}",
            warnings.len(),
            shown.join("\n")
        )));
    }
    let report = write_dataset(tok, opts, &fingerprint, settings, files, skipped, warnings)?;
    Ok(IngestReport {
        used_fallback_template: uses_chat && !encoder.has_model_template,
        ..report
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A deterministic per-document coin: is document `index` of the file with this hash in val?
fn in_val(seed: u64, sha: &str, index: usize, val_split: f64) -> bool {
    if val_split <= 0.0 {
        return false;
    }
    let file_bits = u64::from_str_radix(sha.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    let mut z = seed ^ file_bits ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < val_split
}

fn process(
    path: &Path,
    display: &str,
    encoder: &Encoder,
    cache: &HashMap<String, CachedFile>,
    opts: &IngestOptions,
) -> Result<Outcome> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() {
        return Ok(Outcome::Skipped(SkipKind::Empty, display.into(), None));
    }
    let sha = hex(&Sha256::digest(&bytes));
    let class = extract::classify(display, &bytes);
    match class {
        FileClass::Binary => return Ok(Outcome::Skipped(SkipKind::Binary, display.into(), None)),
        FileClass::Unsupported(why) => {
            return Ok(Outcome::Skipped(
                SkipKind::Unsupported,
                display.into(),
                Some(format!("unsupported: {why}")),
            ))
        }
        _ => {}
    }
    if let Some(c) = cache.get(&sha) {
        return Ok(Outcome::Data(Box::new(FileData {
            display: display.into(),
            sha256: sha,
            bytes: bytes.len() as u64,
            kind: c.kind.clone(),
            format: c.format.clone(),
            warnings: Vec::new(),
            splits: c.splits.clone(),
            reused: true,
        })));
    }
    let mut warnings = Vec::new();
    let byte_len = bytes.len() as u64;
    let text = extract::decode_text(&bytes, &mut warnings);
    drop(bytes);
    let (kind, ex) = match class {
        FileClass::Jsonl => ("jsonl", extract::jsonl_documents(&text)),
        FileClass::Json => ("json", extract::json_documents(&text)),
        FileClass::Text(k) => (
            k,
            extract::Extracted {
                documents: extract::text_documents(k, &text),
                format: "text",
                warnings: Vec::new(),
                lines: Vec::new(),
            },
        ),
        // Returned above; kept so the match stays exhaustive.
        FileClass::Binary | FileClass::Unsupported(_) => {
            return Ok(Outcome::Skipped(SkipKind::Binary, display.into(), None))
        }
    };
    warnings.extend(ex.warnings);
    if ex.documents.is_empty() && warnings.is_empty() {
        return Ok(Outcome::Skipped(SkipKind::Empty, display.into(), None));
    }
    let encoded: Vec<Result<EncodedDoc>> = ex
        .documents
        .par_iter()
        .map(|d: &Document| encoder.encode(d))
        .collect();
    let mut splits: [Vec<EncodedDoc>; 2] = [Vec::new(), Vec::new()];
    for (i, e) in encoded.into_iter().enumerate() {
        match e {
            Ok(e) => {
                let s = usize::from(in_val(opts.seed, &sha, i, opts.val_split));
                splits[s].push(e);
            }
            // A record the chat template refuses (say, roles that do not alternate) is a
            // problem of that record, like a malformed line.
            Err(err @ DataError::Template(_)) => warnings.push(Warning {
                line: ex.lines.get(i).copied(),
                message: format!("skipped: {err}"),
            }),
            Err(err) => {
                return Err(DataError::format(
                    path,
                    format!("document {}: {err}", i + 1),
                ))
            }
        }
    }
    Ok(Outcome::Data(Box::new(FileData {
        display: display.into(),
        sha256: sha,
        bytes: byte_len,
        kind: kind.into(),
        format: ex.format.into(),
        warnings,
        splits,
        reused: false,
    })))
}

#[derive(Clone)]
struct CachedFile {
    kind: String,
    format: String,
    splits: [Vec<EncodedDoc>; 2],
}

/// Tokens of the previous run, by file content hash, when tokenizer and settings are the same.
fn previous(out: &Path, fingerprint: &str, settings: &Settings) -> HashMap<String, CachedFile> {
    let mut cache = HashMap::new();
    let Ok(m) = read_manifest(out) else {
        return cache;
    };
    if m.tokenizer.fingerprint != fingerprint || m.settings != *settings {
        return cache;
    }
    let Ok(ds) = Dataset::open(out) else {
        return cache;
    };
    for f in &m.files {
        let mut splits: [Vec<EncodedDoc>; 2] = [Vec::new(), Vec::new()];
        let mut ok = true;
        for (si, name) in SPLITS.iter().enumerate() {
            let split: &Split = if si == 0 { &ds.train } else { &ds.val };
            let Some(fs) = f.splits.get(*name) else {
                continue;
            };
            for d in fs.documents[0]..fs.documents[1] {
                match split.document(d as usize) {
                    Some(r) => splits[si].push(EncodedDoc {
                        tokens: split.tokens[r.clone()].to_vec(),
                        mask: split
                            .mask
                            .as_ref()
                            .map(|m| m[r].to_vec())
                            .filter(|m| m.contains(&0))
                            .unwrap_or_default(),
                    }),
                    None => ok = false,
                }
            }
        }
        if ok {
            cache.insert(
                f.sha256.clone(),
                CachedFile {
                    kind: f.kind.clone(),
                    format: f.format.clone(),
                    splits,
                },
            );
        }
    }
    cache
}

fn write_dataset(
    tok: &Tokenizer,
    opts: &IngestOptions,
    fingerprint: &str,
    settings: Settings,
    files: Vec<FileData>,
    skipped: SkipCounts,
    warnings: Vec<String>,
) -> Result<IngestReport> {
    let vocab_size = tok.vocab_size();
    let dtype = Dtype::for_vocab(vocab_size);
    let has_mask = files
        .iter()
        .flat_map(|f| f.splits.iter().flatten())
        .any(|d| !d.mask.is_empty());
    let stage = opts.out.join(format!(".ingest-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).map_err(|e| DataError::io(&stage, e))?;

    let mut entries: Vec<FileEntry> = files
        .iter()
        .map(|f| FileEntry {
            path: f.display.clone(),
            sha256: f.sha256.clone(),
            bytes: f.bytes,
            kind: f.kind.clone(),
            format: f.format.clone(),
            documents: f.splits.iter().map(|s| s.len() as u64).sum(),
            tokens: f
                .splits
                .iter()
                .flatten()
                .map(|d| d.tokens.len() as u64)
                .sum(),
            warnings: f.warnings.len() as u64,
            splits: BTreeMap::new(),
        })
        .collect();
    let mut split_infos = BTreeMap::new();
    for (si, name) in SPLITS.iter().enumerate() {
        let mut w = write::SplitWriter::new(&stage, name, dtype, has_mask, opts.shard_tokens);
        for (f, entry) in files.iter().zip(entries.iter_mut()) {
            let docs = &f.splits[si];
            if docs.is_empty() {
                continue;
            }
            let (d0, t0) = (w.documents(), w.tokens());
            let mut ranges: Vec<crate::manifest::ShardRange> = Vec::new();
            for d in docs {
                for r in w.push_doc(&d.tokens, &d.mask)? {
                    match ranges.last_mut() {
                        Some(l) if l.shard == r.shard && l.start + l.len == r.start => {
                            l.len += r.len
                        }
                        _ => ranges.push(r),
                    }
                }
            }
            entry.splits.insert(
                name.to_string(),
                FileSplit {
                    documents: [d0, w.documents()],
                    tokens: [t0, w.tokens()],
                    shards: ranges,
                },
            );
        }
        split_infos.insert(name.to_string(), w.finish()?);
    }
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        dtype,
        vocab_size,
        bos_id: tok.bos_id(),
        eos_id: tok.eos_id(),
        tokenizer: TokenizerInfo {
            source: opts.tokenizer_source.clone(),
            fingerprint: fingerprint.into(),
        },
        settings,
        has_mask,
        splits: split_infos,
        files: entries,
        skipped: skipped.clone(),
    };
    let manifest_path = install(&stage, &opts.out, &manifest)?;

    let files_report = files
        .iter()
        .zip(&manifest.files)
        .map(|(f, e)| FileReport {
            file: f.display.clone(),
            kind: e.kind.clone(),
            format: e.format.clone(),
            documents: e.documents,
            tokens: e.tokens,
            reused: f.reused,
        })
        .collect::<Vec<_>>();
    Ok(IngestReport {
        new_files: files.iter().filter(|f| !f.reused).count() as u64,
        unchanged: files.iter().filter(|f| f.reused).count() as u64,
        files: files_report,
        skipped,
        warnings,
        total_tokens: manifest.splits.values().map(|s| s.tokens).sum(),
        shards: manifest
            .splits
            .values()
            .map(|s| s.shards.len() as u64)
            .sum(),
        manifest: manifest_path,
        split_tokens: manifest
            .splits
            .iter()
            .map(|(k, v)| (k.clone(), v.tokens))
            .collect(),
        split_documents: manifest
            .splits
            .iter()
            .map(|(k, v)| (k.clone(), v.documents))
            .collect(),
        has_mask,
        used_fallback_template: false,
    })
}

/// Moves the staged files into `out`, removes shards of the previous run that are no longer
/// used, and replaces the manifest last (write to a temporary name, then rename).
fn install(stage: &Path, out: &Path, manifest: &Manifest) -> Result<PathBuf> {
    let mut keep: Vec<String> = Vec::new();
    for s in manifest.splits.values() {
        keep.push(s.index.clone());
        for sh in &s.shards {
            keep.push(sh.file.clone());
            keep.extend(sh.mask.clone());
        }
    }
    for name in &keep {
        let (from, to) = (stage.join(name), out.join(name));
        std::fs::rename(&from, &to).map_err(|e| DataError::io(&to, e))?;
    }
    let _ = std::fs::remove_dir_all(stage);
    // Old shards/masks/indexes of ours that this run did not write.
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = SPLITS
                .iter()
                .any(|s| name.starts_with(&format!("{s}-")) || name == format!("{s}.idx"))
                && (name.ends_with(".bin") || name.ends_with(".mask") || name.ends_with(".idx"));
            if ours && !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let path = out.join(MANIFEST_FILE);
    let tmp = out.join(format!("{MANIFEST_FILE}.tmp"));
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| DataError::Invalid(format!("manifest: {e}")))?;
    std::fs::write(&tmp, text).map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
    Ok(path)
}
