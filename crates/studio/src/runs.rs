//! The run manager: a run is a child `neuralforge train --json ...` (argument vector, never a
//! shell). Its stdout NDJSON is journaled to SQLite first, then announced to the streams; its
//! stderr is the run log. A queue feeds at most `max_concurrent_runs` children; a child that
//! dies without `done` is resumed from its last checkpoint while it has restarts left.

use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult};
use crate::journal::{self, Journal};
use crate::util;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The child's stderr, kept in its run folder.
pub const LOG_FILE: &str = "stderr.log";
pub const EVENTS_FILE: &str = "events.ndjson";

struct Live {
    pid: i64,
    stop_requested: bool,
}

pub struct Manager {
    pub db: Arc<Db>,
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    live: Mutex<HashMap<i64, Live>>,
    /// Bumped after every journaled batch or status change; streams wait on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    wake: (Mutex<bool>, Condvar),
}

/// What a child's stream said about how it ended.
#[derive(Default)]
struct Outcome {
    done: Option<bool>,
    error: Option<Value>,
}

impl Outcome {
    fn see(&mut self, e: &Value) {
        match e.get("type").and_then(Value::as_str) {
            Some("done") => self.done = Some(e.get("interrupted") == Some(&json!(true))),
            Some("error") => self.error = Some(e.clone()),
            Some("init") | Some("restart") => *self = Outcome::default(),
            _ => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the journal waits for more of a child's lines after the first of a batch.
const COALESCE: Duration = Duration::from_millis(25);
/// Lines journaled in one transaction at most.
const MAX_BATCH: usize = 5000;

/// The child's stdout as lines (trimmed, invalid UTF-8 replaced), read on their own thread;
/// the channel is bounded so a child that outruns the database waits on its pipe.
fn line_reader(id: i64, stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(2 * MAX_BATCH);
    let spawned = std::thread::Builder::new()
        .name(format!("run-{id}-stdout"))
        .spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 16, stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("studio: run {id}: cannot start its reader thread: {e}");
    }
    rx
}

pub fn has_checkpoint(run_dir: &Path) -> bool {
    let c = run_dir.join("checkpoints");
    c.join("latest").exists()
        || std::fs::read_dir(&c)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
            })
            .unwrap_or(false)
}

impl Manager {
    pub fn new(db: Arc<Db>, exe: PathBuf, data_dir: PathBuf) -> Arc<Manager> {
        let (changes, _) = tokio::sync::watch::channel(0);
        Arc::new(Manager {
            db,
            exe,
            data_dir,
            live: Mutex::new(HashMap::new()),
            changes,
            wake: (Mutex::new(false), Condvar::new()),
        })
    }

    pub fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn wake(&self) {
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
    }

    pub fn max_concurrent(&self) -> usize {
        self.db
            .setting("max_concurrent_runs")
            .and_then(|v| v.as_u64())
            .map(|n| n.max(1) as usize)
            .unwrap_or_else(default_max_concurrent)
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.data_dir.join("runs")
    }

    /// Starts the scheduler thread. Children are spawned from it only: it lives as long as
    /// the studio, and a child's parent-death signal (SIGINT: checkpoint and stop) is tied
    /// to the thread that spawned it.
    pub fn start(self: &Arc<Self>) {
        let m = Arc::clone(self);
        std::thread::Builder::new()
            .name("studio-scheduler".into())
            .spawn(move || {
                m.recover();
                loop {
                    m.schedule();
                    let mut woken = lock(&m.wake.0);
                    if !*woken {
                        woken = m
                            .wake
                            .1
                            .wait_timeout(woken, Duration::from_secs(1))
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    *woken = false;
                }
            })
            .ok();
    }

    fn schedule(self: &Arc<Self>) {
        loop {
            if lock(&self.live).len() >= self.max_concurrent() {
                return;
            }
            let next: Option<(i64, String)> = {
                let conn = self.db.conn();
                let row = conn
                    .query_row(
                        "SELECT run_id, mode FROM queue ORDER BY pos LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .ok()
                    .flatten();
                if let Some((id, _)) = &row {
                    let _ = conn.execute("DELETE FROM queue WHERE run_id = ?1", [id]);
                }
                row
            };
            let Some((id, mode)) = next else { return };
            if let Err(e) = self.start_child(id, mode == "resume") {
                self.finish(
                    id,
                    "error",
                    None,
                    Some(json!({"message": e.message, "code": e.code})),
                );
            }
        }
    }

    fn start_child(self: &Arc<Self>, id: i64, resume: bool) -> ApiResult<()> {
        let run = db::get_run(&self.db.conn(), id)?;
        let run_dir = PathBuf::from(run["run_dir"].as_str().unwrap_or_default());
        std::fs::create_dir_all(&run_dir)?;
        let argv: Vec<String> = if resume && has_checkpoint(&run_dir) {
            vec![
                "train".into(),
                "--json".into(),
                format!("--resume={}", run_dir.display()),
            ]
        } else {
            let cmd: Vec<String> =
                serde_json::from_value(run["command"].clone()).unwrap_or_default();
            cmd.into_iter().skip(1).collect()
        };
        if argv.is_empty() {
            return Err(ApiError::internal("run has no command"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join(LOG_FILE))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&argv)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("cannot start {}: {e}", self.exe.display())))?;
        let pid = child.id() as i64;
        lock(&self.live).insert(
            id,
            Live {
                pid,
                stop_requested: false,
            },
        );
        self.db.conn().execute(
            "UPDATE runs SET status = 'running', pid = ?2, started_at = COALESCE(started_at, ?3),
                 ended_at = NULL, exit_code = NULL WHERE id = ?1",
            params![id, pid, util::now()],
        )?;
        self.bump();
        let journal = Journal::from_summary(&run["summary"]);
        let m = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("run-{id}"))
            .spawn(move || m.follow(id, child, journal))?;
        Ok(())
    }

    /// Reads the child's NDJSON until it closes stdout, then records how it ended.
    fn follow(self: Arc<Self>, id: i64, mut child: Child, mut journal: Journal) {
        let mut outcome = Outcome::default();
        if let Some(stdout) = child.stdout.take() {
            let lines = line_reader(id, stdout);
            while let Ok(first) = lines.recv() {
                // Lines that arrive within the window share one transaction and one wake-up
                // of the streams: a child printing thousands of events a second costs tens
                // of commits a second, not thousands.
                let mut batch = vec![first];
                let until = Instant::now() + COALESCE;
                while batch.len() < MAX_BATCH {
                    match lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(l) => batch.push(l),
                        Err(_) => break,
                    }
                }
                batch.retain(|l| !l.is_empty());
                if let Ok(events) = self.journal(id, &mut journal, &batch, 0) {
                    events.iter().for_each(|(_, e)| outcome.see(e));
                }
                self.bump();
            }
        }
        let status = child.wait();
        let code = status.as_ref().ok().map(|s| {
            s.code()
                .map(i64::from)
                .unwrap_or_else(|| 128 + i64::from(s.signal().unwrap_or(0)))
        });
        let signal = status.as_ref().ok().and_then(|s| s.signal());
        let stop_requested = lock(&self.live)
            .remove(&id)
            .map(|l| l.stop_requested)
            .unwrap_or(false);
        let reason = match (signal, code) {
            (Some(s), _) => format!("killed by signal {s}"),
            (None, Some(c)) => format!("exit code {c}"),
            (None, None) => "lost".into(),
        };
        match (outcome.done, outcome.error) {
            (Some(interrupted), _) => {
                let s = if interrupted { "interrupted" } else { "done" };
                self.finish(id, s, code, None)
            }
            (None, Some(err)) => self.finish(id, "error", code, Some(err)),
            (None, None) if code == Some(0) => self.finish(id, "done", code, None),
            (None, None) if stop_requested => self.finish(id, "interrupted", code, None),
            (None, None) => self.died(id, code, &format!("process died ({reason})")),
        }
        self.wake();
    }

    pub fn journal(
        &self,
        id: i64,
        journal: &mut Journal,
        lines: &[String],
        origin: i64,
    ) -> rusqlite::Result<Vec<(i64, Value)>> {
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        let out = journal::journal_lines(&tx, id, journal, lines, origin)?;
        tx.commit()?;
        Ok(out)
    }

    fn finish(&self, id: i64, status: &str, code: Option<i64>, error: Option<Value>) {
        let conn = self.db.conn();
        let _ = conn.execute(
            "UPDATE runs SET status = ?2, exit_code = COALESCE(?3, exit_code), ended_at = ?4,
                 pid = NULL WHERE id = ?1",
            params![id, status, code, util::now()],
        );
        if let Some(err) = error {
            let _ = conn.execute(
                "UPDATE runs SET summary = json_set(summary, '$.error', json(?2)) WHERE id = ?1",
                params![
                    id,
                    json!({"message": err.get("message"), "code": err.get("code")}).to_string()
                ],
            );
        }
        drop(conn);
        self.bump();
    }

    /// A child that ended without `done` (killed, crashed, studio gone): resume it from its
    /// last checkpoint while auto-resume allows, else leave it interrupted for the user.
    fn died(&self, id: i64, code: Option<i64>, reason: &str) {
        let row: Option<(bool, i64, i64, String)> = self
            .db
            .conn()
            .query_row(
                "SELECT auto_resume, restarts, max_restarts, run_dir FROM runs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .ok()
            .flatten();
        let Some((auto, restarts, max, run_dir)) = row else {
            return;
        };
        if !auto || restarts >= max {
            let why = if auto {
                format!("{reason}; no automatic restarts left ({max})")
            } else {
                reason.to_string()
            };
            self.finish(
                id,
                "interrupted",
                code,
                Some(json!({"message": why, "code": "died"})),
            );
            return;
        }
        let step = self.last_checkpoint_step(id);
        let event = json!({
            "type": "restart",
            "step": step,
            "reason": format!("{reason}; auto-resume {} of {max}", restarts + 1),
            "source": "studio",
        });
        let line = event.to_string();
        // The run folder stays the source of truth: the studio's own event goes there too.
        let run_dir = PathBuf::from(run_dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(run_dir.join(EVENTS_FILE))
        {
            let _ = writeln!(f, "{line}");
        }
        let mut journal = self.journal_of(id);
        let _ = self.journal(id, &mut journal, &[line], 1);
        {
            let conn = self.db.conn();
            let _ = conn.execute(
                "UPDATE runs SET restarts = restarts + 1, status = 'queued', pid = NULL,
                     exit_code = ?2 WHERE id = ?1",
                params![id, code],
            );
        }
        let _ = self.enqueue(id, "resume", true);
        self.bump();
    }

    fn last_checkpoint_step(&self, id: i64) -> u64 {
        self.db
            .conn()
            .query_row(
                "SELECT x_step FROM events WHERE run_id = ?1 AND type = 'checkpoint'
                 ORDER BY id DESC LIMIT 1",
                [id],
                |r| r.get::<_, Option<f64>>(0),
            )
            .ok()
            .flatten()
            .unwrap_or(0.0) as u64
    }

    pub fn journal_of(&self, id: i64) -> Journal {
        let summary: String = self
            .db
            .conn()
            .query_row("SELECT summary FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .unwrap_or_default();
        Journal::from_summary(&db::parse_json(&summary))
    }

    pub fn enqueue(&self, id: i64, mode: &str, front: bool) -> rusqlite::Result<()> {
        let conn = self.db.conn();
        let pos: f64 = conn.query_row(
            if front {
                "SELECT COALESCE(MIN(pos), 0) - 1 FROM queue"
            } else {
                "SELECT COALESCE(MAX(pos), 0) + 1 FROM queue"
            },
            [],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO queue(run_id, pos, mode) VALUES (?1, ?2, ?3)
             ON CONFLICT(run_id) DO UPDATE SET mode = excluded.mode",
            params![id, pos, mode],
        )?;
        conn.execute("UPDATE runs SET status = 'queued' WHERE id = ?1", [id])?;
        drop(conn);
        self.bump();
        self.wake();
        Ok(())
    }

    /// Stop: a queued run is cancelled; a running child gets SIGINT (checkpoint, `done`).
    pub fn stop(&self, id: i64) -> ApiResult<()> {
        let pid = lock(&self.live).get_mut(&id).map(|l| {
            l.stop_requested = true;
            l.pid
        });
        match pid {
            Some(pid) => {
                util::signal(pid, libc::SIGINT);
                db::set_status(&self.db.conn(), id, "stopping")?;
                self.bump();
                Ok(())
            }
            None => self.cancel(id),
        }
    }

    pub fn cancel(&self, id: i64) -> ApiResult<()> {
        let conn = self.db.conn();
        let n = conn.execute("DELETE FROM queue WHERE run_id = ?1", [id])?;
        if n == 0 {
            return Err(ApiError::conflict("the run is neither queued nor running"));
        }
        db::set_status(&conn, id, "cancelled")?;
        drop(conn);
        self.bump();
        Ok(())
    }

    pub fn resume(&self, id: i64) -> ApiResult<()> {
        if lock(&self.live).contains_key(&id) {
            return Err(ApiError::conflict("the run is running"));
        }
        let status: String =
            self.db
                .conn()
                .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))?;
        if !matches!(status.as_str(), "interrupted" | "error" | "cancelled") {
            return Err(ApiError::conflict(format!(
                "a {status} run cannot be resumed"
            )));
        }
        self.enqueue(id, "resume", false)?;
        Ok(())
    }

    pub fn is_live(&self, id: i64) -> bool {
        lock(&self.live).contains_key(&id)
    }

    /// Deletes the run's rows; with `files`, also its folder when that lies in the runs folder.
    pub fn delete(&self, id: i64, files: bool) -> ApiResult<Value> {
        if self.is_live(id) {
            return Err(ApiError::conflict("stop the run before deleting it"));
        }
        let run_dir: String =
            self.db
                .conn()
                .query_row("SELECT run_dir FROM runs WHERE id = ?1", [id], |r| r.get(0))?;
        self.db
            .conn()
            .execute("DELETE FROM runs WHERE id = ?1", [id])?;
        let mut removed = false;
        if files {
            let dir = Path::new(&run_dir);
            let inside = match (dir.canonicalize(), self.runs_dir().canonicalize()) {
                (Ok(d), Ok(r)) => d.starts_with(&r) && d != r,
                _ => false,
            };
            if inside {
                std::fs::remove_dir_all(dir)?;
                removed = true;
            }
        }
        self.bump();
        Ok(json!({"deleted": id, "files_removed": removed}))
    }

    /// Events of `events.ndjson` that the database lacks (written while no studio read the
    /// child's stdout), found after the last stored lines.
    pub fn catch_up(&self, id: i64, run_dir: &Path) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(run_dir.join(EVENTS_FILE)) else {
            return Vec::new();
        };
        let file: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut stored: Vec<String> = {
            let conn = self.db.conn();
            let Ok(mut st) =
                conn.prepare("SELECT data FROM events WHERE run_id = ?1 ORDER BY id DESC LIMIT 3")
            else {
                return Vec::new();
            };
            st.query_map([id], |r| r.get(0))
                .map(|rows| rows.flatten().collect())
                .unwrap_or_default()
        };
        stored.reverse();
        let start = if stored.is_empty() {
            0
        } else {
            let k = stored.len();
            (k..=file.len())
                .rev()
                .find(|&end| file[end - k..end].iter().zip(&stored).all(|(a, b)| a == b))
                .unwrap_or(file.len())
        };
        let lines: Vec<String> = file[start..].iter().map(|s| s.to_string()).collect();
        if lines.is_empty() {
            return Vec::new();
        }
        let mut journal = self.journal_of(id);
        self.journal(id, &mut journal, &lines, 0)
            .map(|v| v.into_iter().map(|(_, e)| e).collect())
            .unwrap_or_default()
    }

    /// At start-up: runs the last studio left running. Their children got SIGINT when it went
    /// away; wait for them to finish checkpointing, read what they wrote meanwhile, then mark
    /// them interrupted or resume them (auto-resume).
    fn recover(self: &Arc<Self>) {
        let rows: Vec<(i64, Option<i64>, String, String, bool)> = {
            let conn = self.db.conn();
            let Ok(mut st) = conn.prepare(
                "SELECT id, pid, status, run_dir, project_id IS NULL AND auto_resume = 0
                 FROM runs WHERE status IN ('running', 'stopping')",
            ) else {
                return;
            };
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map(|rows| rows.flatten().collect())
            .unwrap_or_default()
        };
        for (id, pid, status, run_dir, cli) in rows {
            let dir = Path::new(&run_dir);
            if let (true, Some(holder)) = (cli, crate::cli_runs::lock_holder(dir)) {
                // A CLI run this studio was following: still going, follow it again.
                self.catch_up(id, dir);
                let offset = std::fs::metadata(dir.join(EVENTS_FILE)).map_or(0, |m| m.len());
                crate::cli_runs::follow(self, id, dir.to_path_buf(), offset, holder);
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while pid.is_some_and(util::pid_alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if pid.is_some_and(util::pid_alive) {
                // Still going after a minute: ask again, then leave it to the user.
                if let Some(p) = pid {
                    util::signal(p, libc::SIGINT);
                }
            }
            let mut outcome = Outcome::default();
            self.catch_up(id, Path::new(&run_dir))
                .iter()
                .for_each(|e| outcome.see(e));
            if outcome.done.is_none() && outcome.error.is_none() {
                outcome = self.stored_outcome(id);
            }
            match (outcome.done, outcome.error) {
                (Some(false), _) => self.finish(id, "done", None, None),
                (_, Some(err)) => self.finish(id, "error", None, Some(err)),
                _ if status == "stopping" => self.finish(id, "interrupted", None, None),
                _ => self.died(id, None, "the studio stopped while the run was in flight"),
            }
        }
    }

    /// How the stored stream of a run ended (its last `done`/`error` after the last start).
    fn stored_outcome(&self, id: i64) -> Outcome {
        let mut outcome = Outcome::default();
        let conn = self.db.conn();
        if let Ok(mut st) = conn.prepare(
            "SELECT data FROM events INDEXED BY events_by_run_type WHERE run_id = ?1 AND origin = 0
             AND type IN ('init', 'restart', 'done', 'error') ORDER BY id",
        ) {
            if let Ok(rows) = st.query_map([id], |r| r.get::<_, String>(0)) {
                rows.flatten()
                    .for_each(|d| outcome.see(&db::parse_json(&d)));
            }
        }
        outcome
    }
}

pub fn default_max_concurrent() -> usize {
    let cores = util::cores();
    if cores < 8 {
        1
    } else {
        cores / 4
    }
}
