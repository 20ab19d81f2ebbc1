//! Finding the files to ingest: sources are files or folders (walked recursively in name
//! order); hidden entries inside folders are skipped and counted, as is the output folder.

use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    /// How the file is named in reports and the manifest.
    pub display: String,
}

#[derive(Debug, Default)]
pub struct Discovered {
    pub files: Vec<SourceFile>,
    /// Hidden files, including those inside hidden folders.
    pub hidden: u64,
}

pub fn discover(sources: &[PathBuf], exclude: &Path) -> Result<Discovered> {
    let mut out = Discovered::default();
    let exclude = exclude.canonicalize().ok();
    for src in sources {
        let meta = std::fs::metadata(src).map_err(|e| DataError::io(src, e))?;
        if meta.is_dir() {
            walk(src, &exclude, &mut out)?;
        } else {
            out.files.push(SourceFile {
                path: src.clone(),
                display: src.display().to_string(),
            });
        }
    }
    Ok(out)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, exclude: &Option<PathBuf>, out: &mut Discovered) -> Result<()> {
    if exclude.is_some() && dir.canonicalize().ok() == *exclude {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        // Symlinked folders are not followed (no cycles); symlinked files are read.
        let link = std::fs::symlink_metadata(&p).map_err(|e| DataError::io(&p, e))?;
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(_) => continue, // a dangling symlink
        };
        if is_hidden(&p) {
            out.hidden += if meta.is_dir() { count_files(&p) } else { 1 };
            continue;
        }
        if meta.is_dir() {
            if !link.file_type().is_symlink() {
                walk(&p, exclude, out)?;
            }
        } else if meta.is_file() {
            out.files.push(SourceFile {
                display: p.display().to_string(),
                path: p,
            });
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
