//! Which base model a LoRA adapter was trained on. The trainer records the SHA-256 of the base's
//! bytes (in each checkpoint's trainer state, and beside the PEFT files of the adapter folders it
//! writes); wherever an adapter meets a base, the base is hashed and compared, so an adapter never
//! runs silently on weights it was not trained against.

use crate::output::{Coded, Output};
use crate::trainer::model_setup::EXIT_MODEL;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The record beside an adapter folder's PEFT files (PEFT ignores files it does not know).
pub const SIDECAR: &str = "neuralforge_base.json";

/// SHA-256 of a model file, or of a model folder's files (names included, in name order).
pub fn fingerprint(path: &Path) -> anyhow::Result<String> {
    let cannot = || format!("cannot read model {}", path.display());
    let folder = path.is_dir();
    let mut files = Vec::new();
    if folder {
        for entry in std::fs::read_dir(path).with_context(cannot)? {
            let entry = entry.with_context(cannot)?;
            // Our own record is not part of the model (an adapter folder can be a base's sibling).
            if entry.file_type().with_context(cannot)?.is_file() && entry.file_name() != SIDECAR {
                files.push(entry.path());
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut hasher = Sha256::new();
    for f in &files {
        // Inside a folder the names tell its files apart.
        if let (true, Some(name)) = (folder, f.file_name()) {
            hasher.update(name.as_encoded_bytes());
        }
        let mut file = std::fs::File::open(f)
            .with_context(|| format!("cannot read model file {}", f.display()))?;
        std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("cannot read model file {}", f.display()))?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Writes the record into an adapter folder.
pub fn write_sidecar(dir: &Path, base: Option<&Path>, sha256: &str) -> formats::Result<()> {
    let record = serde_json::json!({
        "base_model": base.map(|b| b.display().to_string()),
        "base_sha256": sha256,
    });
    let path = dir.join(SIDECAR);
    std::fs::write(&path, format!("{record:#}\n")).map_err(|e| formats::FormatError::io(&path, e))
}

/// The base SHA-256 an adapter (a LoRA checkpoint or an adapter folder) records, if any.
/// Adapters from elsewhere, and those of builds before the record, have none.
pub fn recorded_sha256(adapter: &Path) -> anyhow::Result<Option<String>> {
    // A checkpoint keeps it in its trainer state's `state`, an adapter folder in the sidecar.
    let (file, in_state) = match adapter.join("trainer_state.json") {
        p if p.is_file() => (p, true),
        _ => (adapter.join(SIDECAR), false),
    };
    if !file.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    let record = if in_state { v.get("state") } else { Some(&v) };
    match record.and_then(|r| r.get("base_sha256")) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if is_sha256(s) => Ok(Some(s.clone())),
        Some(other) => anyhow::bail!(
            "{}: base_sha256 is {other}, not a SHA-256 in hex",
            file.display()
        ),
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How the base met the adapter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BaseChoice {
    /// Taken from the adapter's own record: a changed file there is an error.
    Recorded,
    /// Named by the user (`--model BASE --adapter A`, `export BASE --merge A`): another base
    /// is allowed (say the F32 export of the quantized file it trained on), with a warning.
    Given,
}

/// Compares `base`'s bytes with the SHA-256 `adapter` records (nothing to do without one).
pub fn check(adapter: &Path, base: &Path, choice: BaseChoice, out: &Output) -> anyhow::Result<()> {
    let Some(then) = recorded_sha256(adapter)? else {
        return Ok(());
    };
    let now = fingerprint(base)?;
    if now == then {
        return Ok(());
    }
    let what = format!(
        "adapter {} was trained on a base whose SHA-256 is {}…, but {} has {}…",
        adapter.display(),
        &then[..12],
        base.display(),
        &now[..12],
    );
    match choice {
        BaseChoice::Recorded => Err(Coded::new(
            "model",
            EXIT_MODEL,
            format!(
                "{what}: the base file changed since training, and the adapter would run on \
                 other weights; to run it on this file anyway, give it as --model and the \
                 adapter as --adapter"
            ),
        )
        .into()),
        BaseChoice::Given => {
            out.log(format!(
                "warning: {what} (another file, or another quantization of the same model?); \
                 running the adapter on it as asked"
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nf-base-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_are_read_and_checked_for_form() {
        let dir = scratch("record");
        assert_eq!(recorded_sha256(&dir).unwrap(), None);
        let sha = "ab".repeat(32);
        write_sidecar(&dir, Some(Path::new("/m.gguf")), &sha).unwrap();
        assert_eq!(recorded_sha256(&dir).unwrap(), Some(sha));
        std::fs::write(dir.join(SIDECAR), r#"{"base_sha256":"xyz"}"#).unwrap();
        let e = recorded_sha256(&dir).unwrap_err().to_string();
        assert!(e.contains(SIDECAR) && e.contains("base_sha256"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_fingerprint_covers_names_and_bytes_but_not_the_record() {
        let dir = scratch("folder");
        std::fs::write(dir.join("a.bin"), b"1234").unwrap();
        let first = fingerprint(&dir).unwrap();
        write_sidecar(&dir, None, &"0".repeat(64)).unwrap();
        assert_eq!(fingerprint(&dir).unwrap(), first);
        std::fs::write(dir.join("a.bin"), b"1235").unwrap();
        assert_ne!(fingerprint(&dir).unwrap(), first);
        std::fs::rename(dir.join("a.bin"), dir.join("b.bin")).unwrap();
        assert_ne!(fingerprint(&dir).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
