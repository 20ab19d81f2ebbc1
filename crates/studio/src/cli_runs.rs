//! A run the CLI is writing into the runs folder (or any added folder) while the studio
//! looks: `train` holds an advisory lock on `RUN_DIR/.lock` for its whole life, so a lock we
//! cannot share means a live writer. Such a run is shown as running and its
//! `events.ndjson` is followed (tailed) until the lock is released; then its stream's end
//! says done, error or interrupted.

use crate::journal::Journal;
use crate::runs::{Manager, EVENTS_FILE};
use crate::util;
use rusqlite::params;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often a followed folder is read for new lines.
const POLL: Duration = Duration::from_millis(250);

/// `Some(pid)` (the pid written in the lock file, when any) while a live process holds the
/// folder's lock; None when nobody does.
pub fn lock_holder(dir: &Path) -> Option<Option<i64>> {
    let mut f = File::open(dir.join(".lock")).ok()?;
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            Some(s.trim().parse().ok())
        }
        Err(TryLockError::Error(_)) => None,
    }
}

/// The complete lines of `events.ndjson` from byte `offset`; returns them and the offset
/// after the last complete line (a line being written stays for the next read).
pub fn read_from(dir: &Path, offset: u64) -> (Vec<String>, u64) {
    let Ok(mut f) = File::open(dir.join(EVENTS_FILE)) else {
        return (Vec::new(), offset);
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (Vec::new(), offset);
    }
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return (Vec::new(), offset);
    };
    let lines = String::from_utf8_lossy(&buf[..end])
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (lines, offset + end as u64 + 1)
}

/// Marks run `id` running (pid of the lock holder) and follows its folder from `offset` on
/// a thread of its own.
pub fn follow(m: &Arc<Manager>, id: i64, dir: PathBuf, offset: u64, pid: Option<i64>) {
    let _ = m.db.conn().execute(
        "UPDATE runs SET status = 'running', pid = ?2, auto_resume = 0, ended_at = NULL
         WHERE id = ?1",
        params![id, pid],
    );
    m.bump();
    let m = Arc::clone(m);
    let spawned = std::thread::Builder::new()
        .name(format!("cli-run-{id}"))
        .spawn(move || {
            let mut journal: Journal = m.journal_of(id);
            let mut offset = offset;
            loop {
                let live = lock_holder(&dir).is_some();
                let (lines, next) = read_from(&dir, offset);
                if !lines.is_empty() {
                    offset = next;
                    if m.journal(id, &mut journal, &lines, 0).is_err() {
                        return;
                    }
                    m.bump();
                }
                if !live {
                    break;
                }
                std::thread::sleep(POLL);
            }
            let status = crate::reindex::stored_status(&m, id);
            let _ = m.db.conn().execute(
                "UPDATE runs SET status = ?2, pid = NULL, ended_at = ?3 WHERE id = ?1",
                params![id, status, util::now()],
            );
            m.bump();
        });
    if let Err(e) = spawned {
        eprintln!("studio: run {id}: cannot follow its folder: {e}");
    }
}
