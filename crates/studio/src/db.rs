//! The SQLite store: one file `studio.sqlite` in the data dir, WAL, foreign keys on, schema
//! changes as numbered migrations recorded in `PRAGMA user_version`.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Each entry moves the schema from version i to i + 1; never edit one that shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE projects(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL);
     CREATE TABLE runs(
        id INTEGER PRIMARY KEY,
        project_id INTEGER REFERENCES projects(id) ON DELETE SET NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        run_dir TEXT NOT NULL UNIQUE,
        command TEXT NOT NULL DEFAULT '[]',
        config TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        exit_code INTEGER,
        pid INTEGER,
        restarts INTEGER NOT NULL DEFAULT 0,
        auto_resume INTEGER NOT NULL DEFAULT 1,
        max_restarts INTEGER NOT NULL DEFAULT 3,
        summary TEXT NOT NULL DEFAULT '{}');
     CREATE TABLE events(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        origin INTEGER NOT NULL DEFAULT 0,
        x_step REAL, x_tokens REAL, x_time REAL,
        loss REAL, val_loss REAL, lr REAL, tps REAL,
        bad INTEGER NOT NULL DEFAULT 0,
        ts REAL NOT NULL,
        data TEXT NOT NULL);
     CREATE INDEX events_by_run_type ON events(run_id, type, id);
     CREATE TABLE generations(
        id INTEGER PRIMARY KEY,
        request TEXT NOT NULL,
        command TEXT NOT NULL DEFAULT '[]',
        output TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        stats TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        ended_at REAL);
     CREATE TABLE jobs(
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        command TEXT NOT NULL DEFAULT '[]',
        events TEXT NOT NULL DEFAULT '[]',
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        ended_at REAL);
     CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE queue(
        run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        pos REAL NOT NULL,
        mode TEXT NOT NULL);",
    // 2: one run's events in id order (streams, pages, the run's last event id) without
    // walking the other runs' rows: the index holds (run_id, rowid).
    "CREATE INDEX events_by_run ON events(run_id);",
    // 3: pre-aggregated groups of a metric's values (tiles.rs), a cache of `events`.
    "CREATE TABLE tiles(
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        metric TEXT NOT NULL,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        count INTEGER NOT NULL,
        nonfinite INTEGER NOT NULL,
        vmin REAL, vmax REAL, vlast REAL,
        step_lo REAL, step_hi REAL, step_last REAL,
        tokens_lo REAL, tokens_hi REAL, tokens_last REAL,
        time_lo REAL, time_hi REAL, time_last REAL,
        PRIMARY KEY (run_id, metric, last_id)) WITHOUT ROWID;",
];

pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Db {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The shared connection (writes and quick reads).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A private connection for a long read (series, export) so it does not hold up writers.
    pub fn reader(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        configure(&conn)?;
        Ok(conn)
    }

    pub fn setting(&self, key: &str) -> Option<Value> {
        let conn = self.conn();
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
    }

    pub fn set_setting(&self, key: &str, value: &Value) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value.to_string()],
        )?;
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

pub fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

pub const RUN_COLUMNS: &str =
    "r.id, r.project_id, r.name, r.status, r.run_dir, r.command, r.config,
    r.created_at, r.started_at, r.ended_at, r.exit_code, r.pid, r.restarts, r.auto_resume,
    r.max_restarts, r.summary,
    (SELECT COUNT(*) FROM queue q2 WHERE q2.pos < q.pos) AS queue_pos, q.run_id IS NOT NULL,
    (SELECT MAX(e.id) FROM events e WHERE e.run_id = r.id) AS last_event_id";

/// A `runs` row (selected with `RUN_COLUMNS` from `runs r LEFT JOIN queue q`) as API JSON.
pub fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<Value> {
    let queued: bool = r.get(17)?;
    Ok(json!({
        "id": r.get::<_, i64>(0)?,
        "project_id": r.get::<_, Option<i64>>(1)?,
        "name": r.get::<_, String>(2)?,
        "status": r.get::<_, String>(3)?,
        "run_dir": r.get::<_, String>(4)?,
        "command": parse_json(&r.get::<_, String>(5)?),
        "config": parse_json(&r.get::<_, String>(6)?),
        "created_at": r.get::<_, f64>(7)?,
        "started_at": r.get::<_, Option<f64>>(8)?,
        "ended_at": r.get::<_, Option<f64>>(9)?,
        "exit_code": r.get::<_, Option<i64>>(10)?,
        "pid": r.get::<_, Option<i64>>(11)?,
        "restarts": r.get::<_, i64>(12)?,
        "auto_resume": r.get::<_, bool>(13)?,
        "max_restarts": r.get::<_, i64>(14)?,
        "summary": parse_json(&r.get::<_, String>(15)?),
        "queue_pos": if queued { Some(r.get::<_, i64>(16)?) } else { None },
        "last_event_id": r.get::<_, Option<i64>>(18)?,
    }))
}

pub fn get_run(conn: &Connection, id: i64) -> rusqlite::Result<Value> {
    conn.query_row(
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN queue q ON q.run_id = r.id WHERE r.id = ?1"
        ),
        [id],
        run_from_row,
    )
}

pub fn set_status(conn: &Connection, id: i64, status: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET status = ?2 WHERE id = ?1",
        params![id, status],
    )?;
    Ok(())
}

pub fn project_from_row(r: &rusqlite::Row) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, i64>(0)?,
        "name": r.get::<_, String>(1)?,
        "config": parse_json(&r.get::<_, String>(2)?),
        "created_at": r.get::<_, f64>(3)?,
        "updated_at": r.get::<_, f64>(4)?,
    }))
}
