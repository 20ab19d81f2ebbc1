//! The overwrite rule shared by every command: an output that exists is refused with a clear
//! error (exit 7, code "exists") unless `--force` is given; the check comes before any write.

use crate::output::Coded;
use crate::trainer::config::EXIT_EXISTS;
use std::path::Path;

fn exists_err(msg: String) -> anyhow::Error {
    Coded::new("exists", EXIT_EXISTS, msg).into()
}

/// Refuses an existing file (or folder) at `path` unless `force`.
pub fn refuse_existing(path: &Path, force: bool, flag: &str) -> anyhow::Result<()> {
    if force || std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let what = if path.is_dir() { "folder" } else { "file" };
    Err(exists_err(format!(
        "{flag} {} already exists ({what}); give --force to replace it, or pick another path",
        path.display()
    )))
}

/// Refuses a folder at `path` that exists and is not empty, unless `force`.
pub fn refuse_existing_dir(path: &Path, force: bool, flag: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    match std::fs::read_dir(path) {
        Err(_) if !path.exists() => Ok(()),
        Err(_) => refuse_existing(path, false, flag),
        Ok(mut entries) => {
            if entries.next().is_none() {
                Ok(())
            } else {
                Err(exists_err(format!(
                    "{flag} {} already exists and is not empty; give --force to replace what \
                     it holds, or pick another folder",
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_paths_are_refused_without_force() {
        let dir = std::env::temp_dir().join(format!("nf-overwrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            refuse_existing_dir(&dir, false, "--out").is_ok(),
            "empty is fine"
        );
        let f = dir.join("x.gguf");
        assert!(refuse_existing(&f, false, "--out").is_ok());
        std::fs::write(&f, b"x").unwrap();
        let e = refuse_existing(&f, false, "--out").unwrap_err();
        assert!(format!("{e}").contains("--force"), "{e}");
        assert_eq!(crate::output::exit_code(&e), EXIT_EXISTS);
        assert!(refuse_existing(&f, true, "--out").is_ok());
        assert!(refuse_existing_dir(&dir, false, "--out").is_err());
        assert!(refuse_existing_dir(&dir, true, "--out").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
