//! The run folders are the source of truth: `events.ndjson` of each folder rebuilds its rows
//! (`--reindex`), and folders that appear in the runs folder (a CLI run, "Add existing run
//! folder") become runs of History.

use crate::cli_runs;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::journal::Journal;
use crate::runs::{Manager, EVENTS_FILE};
use crate::util;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Status a finished stream implies: done, interrupted or error (a folder without a clean
/// end is interrupted: resumable).
fn status_of(events: &[(i64, Value)]) -> &'static str {
    let last = events.iter().rev().find(|(_, e)| {
        matches!(
            e["type"].as_str(),
            Some("done" | "error" | "init" | "restart")
        )
    });
    match last.map(|(_, e)| (e["type"].as_str(), e["interrupted"] == json!(true))) {
        Some((Some("done"), false)) => "done",
        Some((Some("error"), _)) => "error",
        _ => "interrupted",
    }
}

/// Lines journaled per transaction when a whole folder is read: the database lock is
/// released between chunks and only one chunk of parsed events is held in memory.
const CHUNK: usize = 10_000;

/// Journals `DIR/events.ndjson` into run `id`, streaming it in chunks; returns the number of
/// events stored and the status the stream implies.
fn journal_folder(
    m: &Manager,
    id: i64,
    dir: &Path,
    live: bool,
) -> ApiResult<(usize, &'static str, u64)> {
    let file = std::fs::File::open(dir.join(EVENTS_FILE)).map_err(|_| {
        ApiError::bad_request(
            "not_a_run",
            format!("{} holds no {EVENTS_FILE}", dir.display()),
        )
    })?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut journal = Journal::default();
    // The last event that decides the status (done, error, init, restart).
    let mut decisive: Vec<(i64, Value)> = Vec::new();
    let mut total = 0;
    let mut offset = 0u64;
    let mut chunk: Vec<String> = Vec::with_capacity(CHUNK);
    loop {
        let mut line = String::new();
        let mut n = reader.read_line(&mut line)?;
        if live && n > 0 && !line.ends_with('\n') {
            // A line the live writer is still writing: the follower reads it later.
            n = 0;
            line.clear();
        }
        offset += n as u64;
        let line = line.trim_end();
        if !line.is_empty() {
            chunk.push(line.to_string());
        }
        if chunk.len() == CHUNK || (n == 0 && !chunk.is_empty()) {
            let events = m.journal(id, &mut journal, &chunk, 0)?;
            total += events.len();
            if let Some(last) = events.into_iter().rev().find(|(_, e)| {
                matches!(
                    e["type"].as_str(),
                    Some("done" | "error" | "init" | "restart")
                )
            }) {
                decisive = vec![last];
            }
            chunk.clear();
        }
        if n == 0 {
            return Ok((total, status_of(&decisive), offset));
        }
    }
}

fn config_of(dir: &Path) -> Value {
    std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| json!({}))
}

/// Adds the run folder `dir` as a run (its events journaled); returns the run id.
pub fn import_folder(m: &Arc<Manager>, dir: &Path) -> ApiResult<i64> {
    let dir = dir
        .canonicalize()
        .map_err(|_| ApiError::bad_request("missing_path", "path: no such folder"))?;
    let key = dir.to_string_lossy().to_string();
    let known: Option<i64> =
        m.db.conn()
            .query_row("SELECT id FROM runs WHERE run_dir = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    if !dir.join(EVENTS_FILE).is_file() {
        return Err(ApiError::bad_request(
            "not_a_run",
            format!("{} holds no {EVENTS_FILE}", dir.display()),
        ));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    let command = json!(["neuralforge", "train", "--json", format!("--resume={key}")]);
    let id = {
        let conn = m.db.conn();
        conn.execute(
            "INSERT INTO runs(name, status, run_dir, command, config, created_at)
             VALUES (?1, 'interrupted', ?2, ?3, ?4, ?5)",
            params![
                name,
                key,
                command.to_string(),
                config_of(&dir).to_string(),
                util::now()
            ],
        )?;
        conn.last_insert_rowid()
    };
    let holder = cli_runs::lock_holder(&dir);
    let (_, status, offset) = journal_folder(m, id, &dir, holder.is_some())?;
    db::set_status(&m.db.conn(), id, status)?;
    crate::series::build_tiles(&m.db.reader()?, id)?;
    if let Some(pid) = holder {
        // A CLI run still writing: running, and followed until its lock is released.
        cli_runs::follow(m, id, dir.clone(), offset, pid);
    }
    m.bump();
    Ok(id)
}

/// Folders of the runs folder that the database does not know yet.
pub fn discover(m: &Arc<Manager>) -> usize {
    let Ok(rd) = std::fs::read_dir(m.runs_dir()) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        if !p.join(EVENTS_FILE).is_file() {
            continue;
        }
        let key = p
            .canonicalize()
            .unwrap_or(p.clone())
            .to_string_lossy()
            .to_string();
        let known: bool =
            m.db.conn()
                .query_row(
                    "SELECT COUNT(*) > 0 FROM runs WHERE run_dir = ?1",
                    [&key],
                    |r| r.get(0),
                )
                .unwrap_or(true);
        if !known && import_folder(m, &p).is_ok() {
            n += 1;
        }
    }
    n
}

/// Rebuilds every run's events from its folder, then adds unknown folders.
/// Returns (runs rebuilt, events stored).
pub fn reindex_all(m: &Arc<Manager>) -> ApiResult<(usize, usize)> {
    let runs: Vec<(i64, String, String)> = {
        let conn = m.db.conn();
        let mut st = conn.prepare("SELECT id, run_dir, status FROM runs")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.flatten().collect()
    };
    let (mut n, mut total) = (0, 0);
    for (id, dir, status) in runs {
        if !Path::new(&dir).join(EVENTS_FILE).is_file() {
            continue;
        }
        m.db.conn()
            .execute("DELETE FROM events WHERE run_id = ?1", [id])?;
        m.db.conn()
            .execute("DELETE FROM tiles WHERE run_id = ?1", [id])?;
        m.db.conn()
            .execute("UPDATE runs SET summary = '{}' WHERE id = ?1", [id])?;
        let (events, implied, _) = journal_folder(m, id, Path::new(&dir), false)?;
        if !matches!(status.as_str(), "queued" | "running" | "stopping") {
            db::set_status(&m.db.conn(), id, implied)?;
        }
        crate::series::build_tiles(&m.db.reader()?, id)?;
        total += events;
        n += 1;
    }
    n += discover(m);
    Ok((n, total))
}

/// The status the stored stream of run `id` implies (its last done/error/init/restart).
pub fn stored_status(m: &Manager, id: i64) -> &'static str {
    let last: Option<(i64, String)> =
        m.db.conn()
            .query_row(
                "SELECT id, data FROM events INDEXED BY events_by_run_type WHERE run_id = ?1
             AND type IN ('done', 'error', 'init', 'restart') ORDER BY id DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten();
    let events: Vec<(i64, Value)> = last
        .map(|(i, d)| vec![(i, db::parse_json(&d))])
        .unwrap_or_default();
    status_of(&events)
}
