//! Training checkpoints: atomic folders, trainer state, the `latest` pointer.
//!
//! A checkpoint is a folder `checkpoints/step-000100/` holding one or more safetensors files
//! (trainable weights, AdamW moments, ...) and `trainer_state.json`, which records the step,
//! an opaque JSON state owned by the trainer, and the size and FNV-1a hash of every tensor
//! file (so a damaged file is an error, never silently different numbers).
//!
//! Writing: everything goes to a hidden temporary folder, each file and the folder are
//! fsynced, and the folder is renamed into place; then `checkpoints/latest` (one line naming
//! the folder) is replaced by writing a temporary file and renaming it over the old one. A
//! crash at any moment leaves the previous checkpoint and pointer whole.

use crate::error::{FormatError, Result};
use crate::safetensors_io::{self, DType, SafetensorsFile};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Name of the state file inside a checkpoint folder.
pub const STATE_FILE: &str = "trainer_state.json";
/// Name of the pointer file inside the checkpoints folder.
pub const LATEST_FILE: &str = "latest";
const FORMAT_VERSION: u32 = 1;

/// One tensor file of a checkpoint: its stem (`weights` → `weights.safetensors`) and tensors.
pub struct TensorFile<'a> {
    pub stem: &'a str,
    pub tensors: Vec<(String, Vec<usize>, &'a [f32])>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileDigest {
    bytes: u64,
    fnv1a64: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    format_version: u32,
    step: u64,
    files: BTreeMap<String, FileDigest>,
    state: Value,
}

/// A checkpoint folder that has been opened and verified.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub step: u64,
    /// The trainer's own state, as it was saved.
    pub state: Value,
    files: BTreeMap<String, FileDigest>,
}

/// `step-000100`: zero-padded so that names sort by step.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// FNV-1a (64 bit) of a file's bytes, read in blocks.
fn hash_file(path: &Path) -> Result<FileDigest> {
    let mut f = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| FormatError::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        for &b in &buf[..n] {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(FileDigest {
        bytes,
        fnv1a64: format!("{h:016x}"),
    })
}

fn fsync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| FormatError::io(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| FormatError::io(path, e))?;
    f.write_all(bytes).map_err(|e| FormatError::io(path, e))?;
    f.sync_all().map_err(|e| FormatError::io(path, e))
}

fn temp_sibling(target: &Path, tag: &str) -> Result<PathBuf> {
    let parent = target
        .parent()
        .ok_or_else(|| FormatError::invalid(target, "path", "has no parent folder"))?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FormatError::invalid(target, "path", "has no usable file name"))?;
    Ok(parent.join(format!(".{tag}-{name}-{}", std::process::id())))
}

/// Fills a fresh temporary folder with `fill`, fsyncs it and puts it in place of `target`
/// (replacing an older folder of that name). Readers never see a half-written `target`.
pub fn replace_dir_atomically(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(target, "tmp")?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    let filled = fill(&tmp).and_then(|()| {
        for entry in std::fs::read_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))? {
            let p = entry.map_err(|e| FormatError::io(&tmp, e))?.path();
            if p.is_file() {
                fsync_path(&p)?;
            }
        }
        fsync_path(&tmp)
    });
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = temp_sibling(target, "old")?;
    if target.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| FormatError::io(&old, e))?;
        }
        std::fs::rename(target, &old).map_err(|e| FormatError::io(target, e))?;
    }
    std::fs::rename(&tmp, target).map_err(|e| FormatError::io(target, e))?;
    if let Some(parent) = target.parent() {
        fsync_path(parent)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| FormatError::io(&old, e))?;
    }
    Ok(())
}

/// Points `checkpoints/latest` at `dir_name` (write temp file, fsync, rename, fsync folder).
pub fn set_latest(checkpoints: &Path, dir_name: &str) -> Result<()> {
    let target = checkpoints.join(LATEST_FILE);
    let tmp = temp_sibling(&target, "tmp")?;
    write_synced(&tmp, format!("{dir_name}\n").as_bytes())?;
    std::fs::rename(&tmp, &target).map_err(|e| FormatError::io(&target, e))?;
    fsync_path(checkpoints)
}

/// Writes checkpoint `step` under `checkpoints/` and makes it the latest. Returns its folder.
/// `extra` adds files beside the tensors (e.g. the tokenizer) before the folder is sealed.
pub fn save(
    checkpoints: &Path,
    step: u64,
    files: &[TensorFile<'_>],
    state: &Value,
    extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(checkpoints).map_err(|e| FormatError::io(checkpoints, e))?;
    let name = step_dir_name(step);
    let target = checkpoints.join(&name);
    replace_dir_atomically(&target, |tmp| {
        let mut digests = BTreeMap::new();
        for f in files {
            let file_name = format!("{}.safetensors", f.stem);
            let path = tmp.join(&file_name);
            safetensors_io::write(&path, f.tensors.clone(), DType::F32)?;
            digests.insert(file_name, hash_file(&path)?);
        }
        let sf = StateFile {
            format_version: FORMAT_VERSION,
            step,
            files: digests,
            state: state.clone(),
        };
        extra(tmp)?;
        let path = tmp.join(STATE_FILE);
        let text =
            serde_json::to_string_pretty(&sf).map_err(|e| FormatError::json(&path, "write", e))?;
        write_synced(&path, text.as_bytes())
    })?;
    set_latest(checkpoints, &name)?;
    Ok(target)
}

impl Checkpoint {
    /// Opens a checkpoint folder and verifies the size and hash of every tensor file.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| FormatError::io(&path, e))?;
        let sf: StateFile = serde_json::from_str(&text)
            .map_err(|e| FormatError::json(&path, "trainer state", e))?;
        if sf.format_version != FORMAT_VERSION {
            return Err(FormatError::unsupported(
                &path,
                "format_version",
                format!("{} (this build reads {FORMAT_VERSION})", sf.format_version),
            ));
        }
        for (name, want) in &sf.files {
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(FormatError::invalid(
                    &path,
                    "files",
                    format!("bad name {name:?}"),
                ));
            }
            let got = hash_file(&dir.join(name))?;
            if &got != want {
                return Err(FormatError::invalid(
                    &dir.join(name),
                    "contents",
                    format!(
                        "{} bytes with hash {}, but {STATE_FILE} recorded {} bytes with hash {} \
                         (the file is damaged)",
                        got.bytes, got.fnv1a64, want.bytes, want.fnv1a64
                    ),
                ));
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            step: sf.step,
            state: sf.state,
            files: sf.files,
        })
    }

    /// A tensor file of this checkpoint by stem (`weights`).
    pub fn tensors(&self, stem: &str) -> Result<SafetensorsFile> {
        let name = format!("{stem}.safetensors");
        if !self.files.contains_key(&name) {
            return Err(FormatError::invalid(
                &self.dir.join(STATE_FILE),
                "files",
                format!("no {name} in this checkpoint"),
            ));
        }
        SafetensorsFile::open(&self.dir.join(name))
    }
}

/// Removes half-written folders and pointer files left by a process that died while saving
/// (hidden `.tmp-*` / `.old-*` entries). Call only while no other process writes here.
pub fn remove_stale_temporaries(checkpoints: &Path) -> Result<usize> {
    let rd = match std::fs::read_dir(checkpoints) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FormatError::io(checkpoints, e)),
    };
    let mut n = 0;
    for entry in rd {
        let entry = entry.map_err(|e| FormatError::io(checkpoints, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-") || name.starts_with(".old-") {
            let p = entry.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| FormatError::io(&p, e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Checkpoint folders under `checkpoints/` as (step, path), oldest first.
pub fn list(checkpoints: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(checkpoints) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(FormatError::io(checkpoints, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| FormatError::io(checkpoints, e))?;
        if let Some(step) = entry.file_name().to_str().and_then(parse_step_dir_name) {
            if entry.path().is_dir() {
                v.push((step, entry.path()));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The checkpoint `latest` names, verified. Without a pointer (or when it names nothing),
/// the newest step folder is used. `Ok(None)` when there is no checkpoint at all.
pub fn open_latest(checkpoints: &Path) -> Result<Option<Checkpoint>> {
    let pointer = checkpoints.join(LATEST_FILE);
    match std::fs::read_to_string(&pointer) {
        Ok(text) => {
            let name = text.trim();
            if parse_step_dir_name(name).is_none() {
                return Err(FormatError::invalid(
                    &pointer,
                    "latest",
                    format!("names {name:?}, not a step-NNNNNN folder"),
                ));
            }
            let dir = checkpoints.join(name);
            if dir.is_dir() {
                return Checkpoint::open(&dir).map(Some);
            }
            Err(FormatError::invalid(
                &pointer,
                "latest",
                format!("names {name}, which does not exist"),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match list(checkpoints)?.last() {
            Some((_, dir)) => Checkpoint::open(dir).map(Some),
            None => Ok(None),
        },
        Err(e) => Err(FormatError::io(&pointer, e)),
    }
}

/// Deletes the oldest step folders so that at most `keep` remain; never the one named
/// `protect` (the latest). `keep == 0` keeps all.
pub fn prune(checkpoints: &Path, keep: usize, protect: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if keep == 0 {
        return Ok(removed);
    }
    let all = list(checkpoints)?;
    let excess = all.len().saturating_sub(keep);
    for (_, dir) in all.into_iter().take(excess) {
        if dir == protect {
            continue;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| FormatError::io(&dir, e))?;
        removed.push(dir);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nf-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn save_one(dir: &Path, step: u64, x: &[f32]) -> PathBuf {
        let files = [TensorFile {
            stem: "weights",
            tensors: vec![("w".into(), vec![x.len()], x)],
        }];
        save(dir, step, &files, &json!({"loss": step}), &|_| Ok(())).unwrap()
    }

    #[test]
    fn save_open_latest_roundtrip() {
        let d = tmp("roundtrip");
        assert!(open_latest(&d).unwrap().is_none());
        save_one(&d, 100, &[1.0, 2.0]);
        let p = save_one(&d, 200, &[3.0, 4.5]);
        assert_eq!(p, d.join("step-000200"));
        let c = open_latest(&d).unwrap().unwrap();
        assert_eq!(c.step, 200);
        assert_eq!(c.state["loss"], 200);
        let (shape, v) = c.tensors("weights").unwrap().read_any_f32("w").unwrap();
        assert_eq!((shape, v), (vec![2], vec![3.0, 4.5]));
        assert!(c.tensors("adam").is_err());
        // No temporary folders are left behind.
        let hidden = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(hidden, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_file_is_an_error_naming_it() {
        let d = tmp("damaged");
        let p = save_one(&d, 1, &[1.0, 2.0, 3.0]);
        let f = p.join("weights.safetensors");
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x40;
        std::fs::write(&f, bytes).unwrap();
        let e = open_latest(&d).unwrap_err().to_string();
        assert!(
            e.contains("weights.safetensors") && e.contains("damaged"),
            "{e}"
        );
        std::fs::write(p.join(STATE_FILE), "{not json").unwrap();
        let e = Checkpoint::open(&p).unwrap_err().to_string();
        assert!(e.contains(STATE_FILE), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rewriting_a_step_replaces_it_and_prune_keeps_newest() {
        let d = tmp("prune");
        for s in [1, 2, 3, 4] {
            save_one(&d, s, &[s as f32]);
        }
        save_one(&d, 4, &[40.0]);
        let c = open_latest(&d).unwrap().unwrap();
        assert_eq!(
            c.tensors("weights").unwrap().read_any_f32("w").unwrap().1,
            [40.0]
        );
        let removed = prune(&d, 2, &c.dir).unwrap();
        assert_eq!(removed.len(), 2);
        let steps: Vec<u64> = list(&d).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [3, 4]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_pointer_falls_back_to_newest_folder_and_bad_pointer_errors() {
        let d = tmp("pointer");
        save_one(&d, 5, &[5.0]);
        save_one(&d, 7, &[7.0]);
        std::fs::create_dir_all(d.join(".tmp-step-000009-1")).unwrap();
        assert_eq!(remove_stale_temporaries(&d).unwrap(), 1);
        std::fs::remove_file(d.join(LATEST_FILE)).unwrap();
        assert_eq!(open_latest(&d).unwrap().unwrap().step, 7);
        std::fs::write(d.join(LATEST_FILE), "../../etc\n").unwrap();
        assert!(open_latest(&d).is_err());
        std::fs::write(d.join(LATEST_FILE), "step-000009\n").unwrap();
        let e = open_latest(&d).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
