//! Longer child commands the browser follows: ingest, import, export ("jobs") and
//! generation. Each keeps its events in memory while it runs (a stream reads them by index)
//! and in SQLite when it ends.

use crate::db::Db;
use crate::util;
use rusqlite::params;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Events kept per job at most (a huge ingest lists a few files too many otherwise).
const MAX_EVENTS: usize = 20_000;

pub struct Task {
    pub events: Mutex<Vec<Value>>,
    pub status: Mutex<String>,
    pub pid: i64,
    pub changes: tokio::sync::watch::Sender<u64>,
}

impl Task {
    pub fn snapshot(&self, from: usize) -> (Vec<Value>, String) {
        let ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (ev.iter().skip(from).cloned().collect(), st)
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Job,
    Generation,
}

pub struct Tasks {
    pub db: Arc<Db>,
    pub exe: PathBuf,
    pub cwd: PathBuf,
    live: Mutex<HashMap<(bool, i64), Arc<Task>>>,
}

impl Tasks {
    pub fn new(db: Arc<Db>, exe: PathBuf, cwd: PathBuf) -> Arc<Tasks> {
        Arc::new(Tasks {
            db,
            exe,
            cwd,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, kind: Kind, id: i64) -> Option<Arc<Task>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&(kind == Kind::Generation, id)).cloned()
    }

    /// Starts `exe args` as job `id` of `kind` (its row already inserted). `result_path` is
    /// measured when it succeeds.
    pub fn spawn(
        self: &Arc<Self>,
        kind: Kind,
        id: i64,
        args: Vec<String>,
        result_path: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let mut child = Command::new(&self.exe)
            .args(&args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (changes, _) = tokio::sync::watch::channel(0);
        let task = Arc::new(Task {
            events: Mutex::new(Vec::new()),
            status: Mutex::new("running".into()),
            pid: child.id() as i64,
            changes,
        });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind == Kind::Generation, id), Arc::clone(&task));
        let me = Arc::clone(self);
        let stderr = child.stderr.take();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = (&mut e).take(1 << 20).read_to_string(&mut s);
            }
            s
        });
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(out) = child.stdout.take() {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let Ok(e) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if e["type"] == "token" {
                        text.push_str(e["text"].as_str().unwrap_or(""));
                    }
                    let mut ev = task.events.lock().unwrap_or_else(|p| p.into_inner());
                    if ev.len() < MAX_EVENTS {
                        ev.push(e);
                    }
                    drop(ev);
                    task.changes.send_modify(|n| *n += 1);
                }
            }
            let status = child.wait().ok();
            let stderr = err_thread.join().unwrap_or_default();
            let events = task.snapshot(0).0;
            let error = events
                .iter()
                .rev()
                .find(|e| e["type"] == "error")
                .map(|e| json!({"message": e["message"], "code": e["code"]}));
            let ok = status.is_some_and(|s| s.success());
            let stopped = *task.status.lock().unwrap_or_else(|p| p.into_inner()) == "stopping";
            let final_status = if ok {
                "done"
            } else if stopped {
                "stopped"
            } else {
                "error"
            };
            let error = error.or_else(|| {
                (!ok && !stopped).then(|| {
                    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
                    json!({"message": last.unwrap_or("the command failed"), "code": "failed"})
                })
            });
            let result = result_path
                .filter(|p| ok && p.exists())
                .map(|p| json!({"path": p, "bytes": util::disk_size(&p)}));
            me.record(kind, id, final_status, &events, &text, result, error);
            *task.status.lock().unwrap_or_else(|p| p.into_inner()) = final_status.into();
            task.changes.send_modify(|n| *n += 1);
            me.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(kind == Kind::Generation, id));
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        kind: Kind,
        id: i64,
        status: &str,
        events: &[Value],
        text: &str,
        result: Option<Value>,
        error: Option<Value>,
    ) {
        let conn = self.db.conn();
        let now = util::now();
        let _ = match kind {
            Kind::Job => conn.execute(
                "UPDATE jobs SET status = ?2, events = ?3, result = ?4, error = ?5, ended_at = ?6
                 WHERE id = ?1",
                params![
                    id,
                    status,
                    Value::from(events.to_vec()).to_string(),
                    result.map(|r| r.to_string()),
                    error.map(|e| e.to_string()),
                    now
                ],
            ),
            Kind::Generation => {
                let done = events.iter().rev().find(|e| e["type"] == "generate_done");
                let stats = json!({"done": done, "error": error});
                conn.execute(
                    "UPDATE generations SET status = ?2, output = ?3, stats = ?4, ended_at = ?5
                     WHERE id = ?1",
                    params![id, status, text, stats.to_string(), now],
                )
            }
        };
    }

    pub fn stop(&self, kind: Kind, id: i64) -> bool {
        match self.get(kind, id) {
            Some(t) => {
                *t.status.lock().unwrap_or_else(|p| p.into_inner()) = "stopping".into();
                util::signal(t.pid, libc::SIGINT);
                true
            }
            None => false,
        }
    }
}
