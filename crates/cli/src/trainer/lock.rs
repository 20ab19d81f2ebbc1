//! One writer per run folder: `train` holds an OS advisory lock on `RUN_DIR/.lock` for its
//! whole life. The OS drops the lock when the process dies (even by kill -9), so a stale lock
//! file never blocks a resume; the pid written into it only names the holder in the error.

use crate::output::Coded;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Exit status when another process holds the run folder (EX_TEMPFAIL: try again later).
pub const EXIT_LOCKED: i32 = 75;

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Held for as long as this value lives.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the run folder's lock or fails at once, naming the holder's pid. `dir` must exist.
    pub fn acquire(dir: &Path) -> anyhow::Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(Coded::new(
                    "locked",
                    EXIT_LOCKED,
                    format!(
                        "{} is in use by {who} (a training run is writing there); wait for it \
                         to finish or stop it (Ctrl-C / kill -INT), or pick another --out",
                        dir.display()
                    ),
                )
                .into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(anyhow::anyhow!("locking {}: {e}", path.display()))
            }
        }
        // Only the holder writes the pid, so a reader never sees a half-written one for long.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| anyhow::anyhow!("writing lock file {}: {e}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_and_names_the_pid() {
        let dir = std::env::temp_dir().join(format!("nf-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).err().expect("second lock must fail");
        let text = format!("{err:#}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        assert_eq!(crate::output::exit_code(&err), EXIT_LOCKED);
        drop(first);
        assert!(RunLock::acquire(&dir).is_ok(), "released on drop");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
