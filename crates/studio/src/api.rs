//! The JSON API of docs/studio-api.md: routing and request handling. Each handler checks its
//! input, does its work through the store, the run manager or a child command, and answers
//! JSON (errors as `{"error","code"}`).

use crate::args;
use crate::children;
use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{Kind, Tasks};
use crate::reindex;
use crate::runs::{self, Manager};
use crate::series;
use crate::sse;
use crate::util;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::params;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct App {
    pub m: Arc<Manager>,
    pub tasks: Arc<Tasks>,
    pub db: Arc<Db>,
    pub data_dir: PathBuf,
    pub options: Arc<Mutex<Option<Value>>>,
}

type Q = Query<HashMap<String, String>>;
type JsonResult = ApiResult<Json<Value>>;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/options", get(options))
        .route("/api/presets", get(presets))
        .route("/api/validate", post(validate))
        .route("/api/projects", get(list_projects).post(create_project))
        .route(
            "/api/projects/{id}",
            get(get_project).put(update_project).delete(delete_project),
        )
        .route("/api/projects/{id}/runs", post(create_run))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/import", post(import_run))
        .route("/api/runs/{id}", get(get_run).delete(delete_run))
        .route("/api/runs/{id}/stop", post(stop_run))
        .route("/api/runs/{id}/resume", post(resume_run))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/stream", get(run_stream))
        .route("/api/runs/{id}/series", get(run_series))
        .route("/api/runs/{id}/log", get(run_log))
        .route("/api/runs/{id}/export", get(run_export))
        .route("/api/runs/{id}/models", get(run_models))
        .route("/api/queue", get(get_queue).post(set_queue))
        .route("/api/compare", get(compare))
        .route("/api/generate", post(generate))
        .route("/api/generate/{id}/stream", get(generate_stream))
        .route("/api/generate/{id}/stop", post(generate_stop))
        .route("/api/generations", get(generations))
        .route("/api/ingest", post(ingest))
        .route("/api/datasets/stats", get(dataset_stats))
        .route("/api/datasets/preview", get(dataset_preview))
        .route("/api/import", post(import_model))
        .route("/api/export", post(export_model))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/stream", get(job_stream))
        .route("/api/fs", get(fs_list))
        .route("/api/settings", get(get_settings).put(put_settings))
        .fallback(crate::assets::serve)
        .with_state(app)
}

// ---------- helpers ----------

fn body_json(b: &Bytes) -> ApiResult<Value> {
    if b.is_empty() {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body: expected an object",
        ));
    }
    Ok(v)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn need_str<'a>(v: &'a Value, key: &str) -> ApiResult<&'a str> {
    str_field(v, key)
        .ok_or_else(|| ApiError::bad_request("missing_field", format!("{key}: required")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

fn run_dir_of(app: &App, id: i64) -> ApiResult<PathBuf> {
    let dir: String =
        app.db
            .conn()
            .query_row("SELECT run_dir FROM runs WHERE id = ?1", [id], |r| r.get(0))?;
    Ok(PathBuf::from(dir))
}

fn exe(app: &App) -> PathBuf {
    app.m.exe.clone()
}

/// A place under the data dir for an output the user did not name, or named relatively.
fn output_path(app: &App, sub: &str, given: Option<&str>, default_name: String) -> PathBuf {
    let base = app.data_dir.join(sub);
    let _ = std::fs::create_dir_all(&base);
    match given {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => base.join(p),
        None => base.join(default_name),
    }
}

fn stamp() -> String {
    format!("{}", (util::now() * 1000.0) as u64)
}

// ---------- health, options, presets, validate ----------

async fn health() -> Json<Value> {
    Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

async fn options(State(app): State<App>) -> JsonResult {
    if let Some(v) = app
        .options
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return Ok(Json(v));
    }
    let (exe, cwd) = (exe(&app), app.data_dir.clone());
    let done = blocking(move || {
        Ok(children::run(
            &exe,
            &["options".into(), "train".into()],
            &cwd,
            Duration::from_secs(30),
        )?)
    })
    .await?;
    let parsed: Option<Value> = serde_json::from_str(done.stdout.trim())
        .ok()
        .filter(|v: &Value| v.get("options").is_some());
    match parsed {
        Some(v) => {
            *app.options.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
            Ok(Json(v))
        }
        None => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "options_unavailable",
            "`neuralforge options train` gave no option schema",
        )),
    }
}

async fn presets() -> Json<Value> {
    Json(json!([
        {"name": "quick test", "config": {"init": "tiny", "steps": 50, "batch_size": 4,
            "seq_len": 64, "accum": 1, "lr": 0.003, "warmup": 5, "val_split": 0.1,
            "val_every": 10, "ckpt_every": 25}},
        {"name": "from scratch", "config": {"init": "stories15m", "steps": 2000,
            "batch_size": 8, "seq_len": 256, "accum": 4, "lr": 0.0005, "warmup": 100,
            "schedule": "cosine", "val_split": 0.05, "val_every": 100, "ckpt_every": 200}},
        {"name": "full fine-tune", "config": {"steps": 500, "batch_size": 4, "seq_len": 512,
            "accum": 4, "lr": 0.00002, "warmup": 20, "schedule": "cosine", "val_split": 0.05,
            "val_every": 50, "ckpt_every": 100}},
        {"name": "LoRA", "config": {"steps": 500, "batch_size": 4, "seq_len": 512, "accum": 2,
            "lr": 0.0002, "warmup": 20, "lora_rank": 8, "lora_alpha": 16.0,
            "lora_targets": "q,k,v,o", "val_split": 0.05, "val_every": 50, "ckpt_every": 100}}
    ]))
}

fn display_command(train_args: &[String], out: &str) -> Value {
    let mut c = vec!["neuralforge".to_string(), "train".into(), "--json".into()];
    c.extend(train_args.iter().cloned());
    c.push(format!("--out={out}"));
    json!(c)
}

async fn validate(State(app): State<App>, body: Bytes) -> JsonResult {
    let body = body_json(&body)?;
    let config = body.get("config").cloned().unwrap_or_else(|| json!({}));
    let config = config
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::bad_request("invalid_config", "config: expected an object"))?;
    let targs = match args::train_args(&config) {
        Ok(a) => a,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return Ok(Json(
                json!({"ok": false, "error": {"message": e.message, "code": e.code}}),
            ))
        }
        Err(e) => return Err(e),
    };
    let mut argv = vec!["train".to_string(), "--json".into(), "--dry-run".into()];
    argv.extend(targs.iter().cloned());
    let (exe, cwd) = (exe(&app), app.data_dir.clone());
    let done =
        blocking(move || Ok(children::run(&exe, &argv, &cwd, Duration::from_secs(120))?)).await?;
    let events = done.events();
    let command = display_command(&targs, "RUN_DIR");
    if let Some(err) = done.error() {
        return Ok(Json(json!({"ok": false, "error": err, "command": command})));
    }
    let info = |key: &str| {
        events
            .iter()
            .find(|e| e["type"] == "info" && e["key"] == key)
            .map(|e| e["value"].clone())
    };
    let Some(dry) = info("dry_run") else {
        return Ok(Json(json!({"ok": false, "command": command, "error": {
            "message": "this neuralforge has no `train --dry-run`", "code": "dry_run_unsupported"}})));
    };
    Ok(Json(json!({
        "ok": true,
        "plan": info("plan"),
        "init": events.iter().find(|e| e["type"] == "init"),
        "config": dry.get("config").cloned().unwrap_or(Value::Null),
        "warnings": dry.get("warnings").cloned().unwrap_or_else(|| json!([])),
        // The machine's free RAM as the CLI read it: the pre-flight panel's memory meter.
        "free_memory_bytes": dry.get("free_memory_bytes").cloned().unwrap_or(Value::Null),
        "command": command,
    })))
}

// ---------- projects ----------

const PROJECT_COLS: &str = "id, name, config, created_at, updated_at";

async fn list_projects(State(app): State<App>) -> JsonResult {
    let conn = app.db.conn();
    let mut st = conn.prepare(&format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id"))?;
    let rows: Vec<Value> = st.query_map([], db::project_from_row)?.flatten().collect();
    Ok(Json(json!(rows)))
}

fn project(db: &Db, id: i64) -> ApiResult<Value> {
    db.conn()
        .query_row(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1"),
            [id],
            db::project_from_row,
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => ApiError::not_found(format!("no project {id}")),
            e => e.into(),
        })
}

fn project_fields(body: &Value) -> ApiResult<(Option<String>, Option<Value>)> {
    let name = match body.get("name") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => Some(s.trim().into()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name: 1 to 200 characters",
            ))
        }
    };
    let config = match body.get("config") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_config",
                "config: expected an object",
            ))
        }
    };
    Ok((name, config))
}

async fn create_project(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let (name, config) = project_fields(&body)?;
    let name = name.ok_or_else(|| ApiError::bad_request("missing_field", "name: required"))?;
    let now = util::now();
    let id = {
        let conn = app.db.conn();
        conn.execute(
            "INSERT INTO projects(name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            params![name, config.unwrap_or_else(|| json!({})).to_string(), now],
        )?;
        conn.last_insert_rowid()
    };
    Ok((StatusCode::CREATED, Json(project(&app.db, id)?)).into_response())
}

async fn get_project(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    Ok(Json(project(&app.db, id)?))
}

async fn update_project(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    body: Bytes,
) -> JsonResult {
    let body = body_json(&body)?;
    project(&app.db, id)?;
    let (name, config) = project_fields(&body)?;
    let conn = app.db.conn();
    if let Some(n) = name {
        conn.execute(
            "UPDATE projects SET name = ?2 WHERE id = ?1",
            params![id, n],
        )?;
    }
    if let Some(c) = config {
        conn.execute(
            "UPDATE projects SET config = ?2 WHERE id = ?1",
            params![id, c.to_string()],
        )?;
    }
    conn.execute(
        "UPDATE projects SET updated_at = ?2 WHERE id = ?1",
        params![id, util::now()],
    )?;
    drop(conn);
    Ok(Json(project(&app.db, id)?))
}

async fn delete_project(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    project(&app.db, id)?;
    app.db
        .conn()
        .execute("DELETE FROM projects WHERE id = ?1", [id])?;
    Ok(Json(json!({"deleted": id})))
}

// ---------- runs ----------

async fn create_run(
    State(app): State<App>,
    UrlPath(pid): UrlPath<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let p = project(&app.db, pid)?;
    let config = args::merged(&p["config"], body.get("config").unwrap_or(&Value::Null));
    let targs = args::train_args(&config)?;
    let auto = body
        .get("auto_resume")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let max = body
        .get("max_restarts")
        .and_then(Value::as_u64)
        .unwrap_or(3)
        .min(100) as i64;
    let name = str_field(&body, "name").map(str::to_string);
    let runs_dir = app.m.runs_dir();
    std::fs::create_dir_all(&runs_dir)?;
    let id = {
        let conn = app.db.conn();
        conn.execute(
            "INSERT INTO runs(project_id, name, status, run_dir, config, created_at, auto_resume,
                              max_restarts)
             VALUES (?1, '', 'queued', ?2, ?3, ?4, ?5, ?6)",
            params![
                pid,
                format!(".pending-{}", stamp()),
                Value::Object(config.clone()).to_string(),
                util::now(),
                auto,
                max
            ],
        )?;
        let id = conn.last_insert_rowid();
        let mut dir = runs_dir.join(id.to_string());
        if dir.exists() {
            dir = runs_dir.join(format!("{id}-{}", stamp()));
        }
        let dir_s = dir.to_string_lossy().to_string();
        let name = name.unwrap_or_else(|| format!("{} #{id}", p["name"].as_str().unwrap_or("run")));
        conn.execute(
            "UPDATE runs SET run_dir = ?2, command = ?3, name = ?4 WHERE id = ?1",
            params![id, dir_s, display_command(&targs, &dir_s).to_string(), name],
        )?;
        id
    };
    app.m.enqueue(id, "start", false)?;
    let run = db::get_run(&app.db.conn(), id)?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

async fn list_runs(State(app): State<App>, Query(q): Q) -> JsonResult {
    let m = Arc::clone(&app.m);
    blocking(move || {
        reindex::discover(&m);
        let mut sql = format!(
            "SELECT {} FROM runs r LEFT JOIN queue q ON q.run_id = r.id WHERE 1 = 1",
            db::RUN_COLUMNS
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(p) = q.get("project") {
            let p: i64 = p
                .parse()
                .map_err(|_| ApiError::bad_request("invalid_query", "project: expected an id"))?;
            sql.push_str(" AND r.project_id = ?");
            args.push(json!(p));
        }
        if let Some(s) = q.get("status") {
            sql.push_str(" AND r.status = ?");
            args.push(json!(s));
        }
        let order = if q.get("order").map(String::as_str) == Some("asc") {
            "ASC"
        } else {
            "DESC"
        };
        match q.get("sort").map(String::as_str) {
            Some("loss") => sql.push_str(&format!(
                " ORDER BY json_extract(r.summary, '$.loss') IS NULL, json_extract(r.summary, '$.loss') {order}"
            )),
            _ => sql.push_str(&format!(" ORDER BY r.created_at {order}, r.id {order}")),
        }
        let conn = m.db.conn();
        let mut st = conn.prepare(&sql)?;
        let params: Vec<rusqlite::types::Value> = args
            .iter()
            .map(|v| match v {
                Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().unwrap_or(0)),
                v => rusqlite::types::Value::Text(v.as_str().unwrap_or("").to_string()),
            })
            .collect();
        let rows: Vec<Value> = st
            .query_map(rusqlite::params_from_iter(params), db::run_from_row)?
            .flatten()
            .collect();
        Ok(Json(json!(rows)))
    })
    .await
}

fn run_or_404(db: &Db, id: i64) -> ApiResult<Value> {
    db::get_run(&db.conn(), id).map_err(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => ApiError::not_found(format!("no run {id}")),
        e => e.into(),
    })
}

async fn get_run(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    Ok(Json(run_or_404(&app.db, id)?))
}

async fn delete_run(State(app): State<App>, UrlPath(id): UrlPath<i64>, Query(q): Q) -> JsonResult {
    run_or_404(&app.db, id)?;
    let files = q.get("delete_files").map(String::as_str) == Some("true");
    Ok(Json(app.m.delete(id, files)?))
}

async fn stop_run(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    run_or_404(&app.db, id)?;
    app.m.stop(id)?;
    Ok(Json(run_or_404(&app.db, id)?))
}

async fn resume_run(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    run_or_404(&app.db, id)?;
    app.m.resume(id)?;
    Ok(Json(run_or_404(&app.db, id)?))
}

async fn cancel_run(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    run_or_404(&app.db, id)?;
    app.m.cancel(id)?;
    Ok(Json(run_or_404(&app.db, id)?))
}

async fn import_run(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let path = need_str(&body, "path")?.to_string();
    args::check_path("path", &path)?;
    let m = Arc::clone(&app.m);
    let id = blocking(move || reindex::import_folder(&m, Path::new(&path))).await?;
    Ok((StatusCode::CREATED, Json(run_or_404(&app.db, id)?)).into_response())
}

async fn run_events(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    Query(q): Q,
) -> ApiResult<Response> {
    run_or_404(&app.db, id)?;
    let after: i64 = q.get("after").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: i64 = q
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 100_000);
    let db = Arc::clone(&app.db);
    let body = blocking(move || {
        let conn = db.reader()?;
        let mut st = conn.prepare(
            "SELECT id, data FROM events WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let mut rows = st.query(params![id, after, limit])?;
        let mut out = String::from("[");
        let mut first = true;
        while let Some(r) = rows.next()? {
            let eid: i64 = r.get(0)?;
            let data: String = r.get(1)?;
            if !first {
                out.push(',');
            }
            first = false;
            let rest = data.strip_prefix('{').unwrap_or(&data);
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            out.push_str(&format!("{{\"id\":{eid}{sep}{rest}"));
        }
        out.push(']');
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn run_stream(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Query(q): Q,
) -> ApiResult<Response> {
    run_or_404(&app.db, id)?;
    let after = sse::start_after(&headers, q.get("after").and_then(|s| s.parse().ok()));
    Ok(sse::run_stream(Arc::clone(&app.m), id, after))
}

async fn run_series(State(app): State<App>, UrlPath(id): UrlPath<i64>, Query(q): Q) -> JsonResult {
    run_or_404(&app.db, id)?;
    let num = |k: &str| {
        q.get(k)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let query = series::Query {
        metric: q.get("metric").cloned().unwrap_or_else(|| "loss".into()),
        x: q.get("x").cloned().unwrap_or_else(|| "step".into()),
        from: num("from"),
        to: num("to"),
        buckets: q
            .get("buckets")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    };
    let db = Arc::clone(&app.db);
    blocking(move || Ok(Json(series::series(&db.reader()?, id, &query)?))).await
}

async fn run_log(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> ApiResult<Response> {
    let dir = run_dir_of(&app, id)?;
    let text = blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(dir.join(runs::LOG_FILE)) else {
            return Ok(String::new());
        };
        // The last 2 MiB is plenty for a page.
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(2 << 20)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn run_export(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    Query(q): Q,
) -> ApiResult<Response> {
    run_or_404(&app.db, id)?;
    let csv = match q.get("format").map(String::as_str) {
        Some("csv") | None => true,
        Some("ndjson") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                "format: csv or ndjson",
            ))
        }
    };
    let db = Arc::clone(&app.db);
    let body = blocking(move || {
        let conn = db.reader()?;
        let mut out = String::new();
        if csv {
            out.push_str(
                "event_id,type,step,tokens,time_s,loss,val_loss,lr,tokens_per_s,nonfinite\n",
            );
            let mut st = conn.prepare(
                "SELECT id, type, x_step, x_tokens, x_time, loss, val_loss, lr, tps, bad FROM events
                 WHERE run_id = ?1 AND +type IN ('step', 'batch', 'val') ORDER BY id",
            )?;
            let mut rows = st.query([id])?;
            let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            while let Some(r) = rows.next()? {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{}\n",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    f(r.get(2)?),
                    f(r.get(3)?),
                    f(r.get(4)?),
                    f(r.get(5)?),
                    f(r.get(6)?),
                    f(r.get(7)?),
                    f(r.get(8)?),
                    r.get::<_, i64>(9)?
                ));
            }
        } else {
            let mut st = conn.prepare("SELECT data FROM events WHERE run_id = ?1 ORDER BY id")?;
            let mut rows = st.query([id])?;
            while let Some(r) = rows.next()? {
                out.push_str(&r.get::<_, String>(0)?);
                out.push('\n');
            }
        }
        Ok(out)
    })
    .await?;
    let (mime, ext) = if csv {
        ("text/csv", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"run-{id}.{ext}\""),
            ),
        ],
        Body::from(body),
    )
        .into_response())
}

async fn run_models(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    let dir = run_dir_of(&app, id)?;
    let mut out = Vec::new();
    for (kind, sub) in [("final", "model"), ("adapter", "adapter"), ("best", "best")] {
        let p = dir.join(sub);
        if p.is_dir() {
            out.push(json!({"kind": kind, "path": p, "step": null}));
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("checkpoints")) {
        let mut ck: Vec<(u64, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("step-")?.parse().ok()?;
                e.path().is_dir().then(|| (step, e.path()))
            })
            .collect();
        ck.sort();
        for (step, p) in ck {
            out.push(json!({"kind": "checkpoint", "path": p, "step": step}));
        }
    }
    Ok(Json(json!(out)))
}

async fn get_queue(State(app): State<App>) -> JsonResult {
    let conn = app.db.conn();
    let mut st = conn.prepare(&format!(
        "SELECT {} FROM queue q JOIN runs r ON r.id = q.run_id ORDER BY q.pos",
        db::RUN_COLUMNS
    ))?;
    let rows: Vec<Value> = st.query_map([], db::run_from_row)?.flatten().collect();
    Ok(Json(json!(rows)))
}

async fn set_queue(State(app): State<App>, body: Bytes) -> JsonResult {
    let body = body_json(&body)?;
    let order: Vec<i64> = body
        .get("order")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_order", "order: expected a list of run ids")
        })?;
    {
        let mut conn = app.db.conn();
        let tx = conn.transaction()?;
        let current: Vec<i64> = {
            let mut st = tx.prepare("SELECT run_id FROM queue ORDER BY pos")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.flatten().collect()
        };
        let mut new: Vec<i64> = order
            .iter()
            .copied()
            .filter(|id| current.contains(id))
            .collect();
        new.extend(current.iter().filter(|id| !order.contains(id)));
        for (i, id) in new.iter().enumerate() {
            tx.execute(
                "UPDATE queue SET pos = ?2 WHERE run_id = ?1",
                params![id, i as f64],
            )?;
        }
        tx.commit()?;
    }
    app.m.bump();
    get_queue(State(app)).await
}

async fn compare(State(app): State<App>, Query(q): Q) -> JsonResult {
    let ids: Vec<i64> = q
        .get("runs")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "runs: comma-separated run ids",
        ));
    }
    let runs: Vec<Value> = ids
        .iter()
        .map(|&id| run_or_404(&app.db, id))
        .collect::<ApiResult<_>>()?;
    let mut keys: Vec<String> = runs
        .iter()
        .filter_map(|r| r["config"].as_object())
        .flat_map(|c| c.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let first = runs[0]["config"].get(k);
            runs.iter().any(|r| r["config"].get(k) != first)
        })
        .collect();
    Ok(Json(json!({"runs": runs, "config_diff": diff})))
}

// ---------- generation, data, import/export jobs ----------

const GEN_FLAGS: &[&str] = &[
    "adapter",
    "tokenizer",
    "system",
    "temp",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "max_tokens",
    "threads",
    "ctx",
    "logprobs",
];

/// The most alternatives `generate --logprobs` reports per token.
const MAX_LOGPROBS: u64 = 20;

async fn generate(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let model = need_str(&body, "model")?;
    args::check_path("model", model)?;
    if let Some(v) = body.get("logprobs") {
        if v.as_u64().is_none_or(|n| n > MAX_LOGPROBS) {
            return Err(ApiError::bad_request(
                "invalid_logprobs",
                format!("logprobs is {v}: expected a whole number from 0 to {MAX_LOGPROBS}"),
            ));
        }
    }
    let mut argv = vec![
        "generate".to_string(),
        "--json".into(),
        format!("--model={model}"),
    ];
    let mut flags: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
    let messages = body.get("messages").and_then(Value::as_array);
    if messages.is_some() {
        // The system message travels in the conversation file.
        flags.remove("system");
    }
    argv.extend(args::flag_args(
        &flags,
        &["adapter", "tokenizer"],
        GEN_FLAGS,
    )?);
    match messages {
        Some(msgs) => {
            let file = conversation_file(&app, &body, msgs)?;
            argv.push("--chat".into());
            argv.push(format!("--messages={}", file.display()));
        }
        None => {
            if body.get("chat") == Some(&json!(true)) {
                argv.push("--chat".into());
            }
            argv.push(format!("--prompt={}", need_str(&body, "prompt")?));
        }
    }
    if let Some(stops) = body.get("stop").and_then(Value::as_array) {
        argv.extend(
            stops
                .iter()
                .filter_map(Value::as_str)
                .map(|s| format!("--stop={s}")),
        );
    }
    let id = {
        let conn = app.db.conn();
        conn.execute(
            "INSERT INTO generations(request, command, status, created_at)
             VALUES (?1, ?2, 'running', ?3)",
            params![body.to_string(), json!(argv).to_string(), util::now()],
        )?;
        conn.last_insert_rowid()
    };
    app.tasks
        .spawn(Kind::Generation, id, argv, None)
        .map_err(|e| ApiError::internal(format!("cannot start generate: {e}")))?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

/// The whole conversation (the system message first, then every turn) as the JSON file of
/// `generate --chat --messages`, under `DATA_DIR/generations/`.
fn conversation_file(app: &App, body: &Value, msgs: &[Value]) -> ApiResult<PathBuf> {
    let mut conv: Vec<Value> = Vec::with_capacity(msgs.len() + 1);
    let has_system = msgs.iter().any(|m| m["role"] == "system");
    if let (Some(sys), false) = (str_field(body, "system"), has_system) {
        conv.push(json!({"role": "system", "content": sys}));
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let content = m["content"].as_str();
        match (role, content) {
            ("system" | "user" | "assistant", Some(c)) => {
                conv.push(json!({"role": role, "content": c}))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    format!("messages[{i}]: expected {{\"role\": system|user|assistant, \"content\": text}}"),
                ))
            }
        }
    }
    if conv.last().is_none_or(|m| m["role"] != "user") {
        return Err(ApiError::bad_request(
            "invalid_messages",
            "messages: the last message must be the user's",
        ));
    }
    let dir = app.data_dir.join("generations");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("conversation-{}.json", stamp()));
    std::fs::write(&file, Value::from(conv).to_string())?;
    Ok(file)
}

/// SSE of a job's or generation's events; `id:` is the event's 1-based index.
fn task_stream(app: &App, kind: Kind, id: i64, headers: &HeaderMap) -> ApiResult<Response> {
    let after = sse::start_after(headers, None).max(0) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(4);
    let Some(task) = app.tasks.get(kind, id) else {
        // Finished before this studio started: the stored record, then the end.
        let (table, cols) = match kind {
            Kind::Generation => ("generations", "status, output, stats"),
            Kind::Job => ("jobs", "status, events, result"),
        };
        let row: (String, String, Option<String>) = app
            .db
            .conn()
            .query_row(
                &format!("SELECT {cols} FROM {table} WHERE id = ?1"),
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|_| ApiError::not_found(format!("no {table} {id}")))?;
        let data = json!({"status": row.0, "stored": row.1, "extra": row.2}).to_string();
        let _ = tx.try_send(Ok(Bytes::from(format!("event: status\ndata: {data}\n\n"))));
        return Ok(sse::response(rx));
    };
    let mut changes = task.changes.subscribe();
    tokio::spawn(async move {
        let mut sent = after;
        loop {
            changes.mark_unchanged();
            let (events, status) = task.snapshot(sent);
            let mut buf = String::new();
            for e in events {
                sent += 1;
                let kind = e["type"].as_str().unwrap_or("event").to_string();
                buf.push_str(&format!("id: {sent}\nevent: {kind}\ndata: {e}\n\n"));
            }
            let finished = !matches!(status.as_str(), "running" | "stopping");
            if finished {
                buf.push_str(&format!(
                    "event: status\ndata: {}\n\n",
                    json!({"status": status})
                ));
            }
            if !buf.is_empty() && tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
            if finished {
                return;
            }
            tokio::time::sleep(sse::FLUSH_EVERY).await;
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(sse::response(rx))
}

async fn generate_stream(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    task_stream(&app, Kind::Generation, id, &headers)
}

async fn generate_stop(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    if app.tasks.stop(Kind::Generation, id) {
        Ok(Json(json!({"stopping": id})))
    } else {
        Err(ApiError::conflict("the generation is not running"))
    }
}

async fn generations(State(app): State<App>) -> JsonResult {
    let conn = app.db.conn();
    let mut st = conn.prepare(
        "SELECT id, request, output, status, stats, created_at, ended_at FROM generations
         ORDER BY id DESC LIMIT 200",
    )?;
    let rows: Vec<Value> = st
        .query_map([], |r| {
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "request": db::parse_json(&r.get::<_, String>(1)?),
                "output": r.get::<_, String>(2)?,
                "status": r.get::<_, String>(3)?,
                "stats": db::parse_json(&r.get::<_, String>(4)?),
                "created_at": r.get::<_, f64>(5)?,
                "ended_at": r.get::<_, Option<f64>>(6)?,
            }))
        })?
        .flatten()
        .collect();
    Ok(Json(json!(rows)))
}

fn start_job(app: &App, kind: &str, argv: Vec<String>, out: PathBuf) -> ApiResult<Response> {
    let id = {
        let conn = app.db.conn();
        conn.execute(
            "INSERT INTO jobs(kind, status, command, created_at) VALUES (?1, 'running', ?2, ?3)",
            params![kind, json!(argv).to_string(), util::now()],
        )?;
        conn.last_insert_rowid()
    };
    app.tasks
        .spawn(Kind::Job, id, argv, Some(out))
        .map_err(|e| ApiError::internal(format!("cannot start {kind}: {e}")))?;
    Ok((StatusCode::CREATED, Json(job(app, id)?)).into_response())
}

async fn ingest(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let inputs: Vec<String> = body
        .get("inputs")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .filter(|v: &Vec<String>| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "inputs: a list of paths"))?;
    for p in &inputs {
        args::check_path("inputs", p)?;
    }
    let tok = need_str(&body, "tokenizer")?;
    args::check_path("tokenizer", tok)?;
    let out = output_path(
        &app,
        "datasets",
        str_field(&body, "out"),
        format!("dataset-{}", stamp()),
    );
    let mut argv = vec![
        "ingest".to_string(),
        "--json".into(),
        format!("--tokenizer={tok}"),
        format!("--out={}", out.display()),
    ];
    if let Some(v) = body.get("val_split").and_then(Value::as_f64) {
        argv.push(format!("--val-split={v}"));
    }
    for flag in ["incremental", "strict", "train_on_prompt"] {
        if body.get(flag) == Some(&json!(true)) {
            argv.push(format!("--{}", flag.replace('_', "-")));
        }
    }
    argv.push("--".into());
    argv.extend(inputs);
    start_job(&app, "ingest", argv, out)
}

async fn import_model(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let src = need_str(&body, "source")?;
    args::check_path("source", src)?;
    let name = Path::new(src)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let out = output_path(
        &app,
        "models",
        str_field(&body, "out"),
        format!("{name}-{}", stamp()),
    );
    let mut argv = vec![
        "import".to_string(),
        "--json".into(),
        format!("--out={}", out.display()),
    ];
    let flags = body.as_object().cloned().unwrap_or_default();
    argv.extend(args::flag_args(&flags, &[], &["dtype", "force"])?);
    argv.push("--".into());
    argv.push(src.into());
    start_job(&app, "import", argv, out)
}

async fn export_model(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let src = need_str(&body, "source")?;
    args::check_path("source", src)?;
    let format = need_str(&body, "format")?;
    if !matches!(format, "gguf" | "hf" | "llama2c" | "peft") {
        return Err(ApiError::bad_request(
            "invalid_format",
            "format: gguf, hf, llama2c or peft",
        ));
    }
    let ext = match format {
        "gguf" => ".gguf",
        "llama2c" => ".bin",
        _ => "",
    };
    let out = output_path(
        &app,
        "exports",
        str_field(&body, "out"),
        format!("export-{}{ext}", stamp()),
    );
    let mut argv = vec![
        "export".to_string(),
        "--json".into(),
        format!("--format={format}"),
        format!("--out={}", out.display()),
    ];
    let flags = body.as_object().cloned().unwrap_or_default();
    argv.extend(args::flag_args(&flags, &["merge"], &["dtype", "merge"])?);
    argv.push("--".into());
    argv.push(src.into());
    start_job(&app, "export", argv, out)
}

fn job(app: &App, id: i64) -> ApiResult<Value> {
    let mut v = app
        .db
        .conn()
        .query_row(
            "SELECT id, kind, status, command, events, result, error, created_at, ended_at
             FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok(json!({
                    "id": r.get::<_, i64>(0)?,
                    "kind": r.get::<_, String>(1)?,
                    "status": r.get::<_, String>(2)?,
                    "command": db::parse_json(&r.get::<_, String>(3)?),
                    "events": db::parse_json(&r.get::<_, String>(4)?),
                    "result": r.get::<_, Option<String>>(5)?.map(|s| db::parse_json(&s)),
                    "error": r.get::<_, Option<String>>(6)?.map(|s| db::parse_json(&s)),
                    "created_at": r.get::<_, f64>(7)?,
                    "ended_at": r.get::<_, Option<f64>>(8)?,
                }))
            },
        )
        .map_err(|_| ApiError::not_found(format!("no job {id}")))?;
    if let Some(t) = app.tasks.get(Kind::Job, id) {
        let (events, status) = t.snapshot(0);
        if matches!(status.as_str(), "running" | "stopping") {
            v["events"] = json!(events);
            v["status"] = json!(status);
        }
    }
    Ok(v)
}

async fn get_job(State(app): State<App>, UrlPath(id): UrlPath<i64>) -> JsonResult {
    Ok(Json(job(&app, id)?))
}

async fn job_stream(
    State(app): State<App>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    task_stream(&app, Kind::Job, id, &headers)
}

async fn dataset_child(app: &App, argv: Vec<String>) -> ApiResult<Vec<Value>> {
    let (exe, cwd) = (exe(app), app.data_dir.clone());
    let done =
        blocking(move || Ok(children::run(&exe, &argv, &cwd, Duration::from_secs(60))?)).await?;
    if let Some(err) = done.error() {
        return Err(ApiError::bad_request(
            "dataset",
            err["message"].as_str().unwrap_or("failed").to_string(),
        ));
    }
    Ok(done.events())
}

async fn dataset_stats(State(app): State<App>, Query(q): Q) -> JsonResult {
    let path = q
        .get("path")
        .ok_or_else(|| ApiError::bad_request("missing_field", "path: required"))?;
    args::check_path("path", path)?;
    let events = dataset_child(
        &app,
        vec!["info".into(), "--json".into(), "--".into(), path.clone()],
    )
    .await?;
    let mut info = Map::new();
    for e in events.iter().filter(|e| e["type"] == "info") {
        if let Some(k) = e["key"].as_str() {
            info.insert(k.to_string(), e["value"].clone());
        }
    }
    Ok(Json(json!({"path": path, "info": info})))
}

async fn dataset_preview(State(app): State<App>, Query(q): Q) -> JsonResult {
    let path = q
        .get("path")
        .ok_or_else(|| ApiError::bad_request("missing_field", "path: required"))?;
    args::check_path("path", path)?;
    let n: u32 = q
        .get("n")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .clamp(1, 100);
    let mut argv = vec![
        "data".into(),
        "preview".into(),
        "--json".into(),
        format!("--n={n}"),
    ];
    if let Some(s) = q
        .get("split")
        .filter(|s| matches!(s.as_str(), "train" | "val"))
    {
        argv.push(format!("--split={s}"));
    }
    argv.push("--".into());
    argv.push(path.clone());
    let events = dataset_child(&app, argv).await?;
    Ok(Json(json!({"path": path, "events": events})))
}

// ---------- files and settings ----------

fn fs_roots(app: &App) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(b) = directories::BaseDirs::new() {
        roots.extend(b.home_dir().canonicalize());
    }
    roots.extend(app.data_dir.canonicalize());
    roots
}

async fn fs_list(State(app): State<App>, Query(q): Q) -> JsonResult {
    let roots = fs_roots(&app);
    let asked = q
        .get("path")
        .map(PathBuf::from)
        .or_else(|| roots.first().cloned())
        .ok_or_else(|| ApiError::not_found("no home folder"))?;
    let dir = asked
        .canonicalize()
        .map_err(|_| ApiError::not_found("path: no such folder"))?;
    let allowed = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    if !allowed(&dir) {
        return Err(ApiError::forbidden(
            "outside_roots",
            "path: outside the home and data folders",
        ));
    }
    if !dir.is_dir() {
        return Err(ApiError::bad_request("not_a_folder", "path: not a folder"));
    }
    let hidden = q.get("hidden").map(String::as_str) == Some("true");
    let mut entries: Vec<Value> = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && !hidden {
                return None;
            }
            let meta = std::fs::metadata(e.path()).ok()?;
            let kind = if meta.is_dir() { "dir" } else { "file" };
            Some(json!({"name": name, "kind": kind, "size": if meta.is_dir() { None } else { Some(meta.len()) }}))
        })
        .collect();
    entries.sort_by(|a, b| {
        (a["kind"] != "dir", a["name"].as_str()).cmp(&(b["kind"] != "dir", b["name"].as_str()))
    });
    let parent = dir.parent().filter(|p| allowed(p)).map(Path::to_path_buf);
    Ok(Json(
        json!({"path": dir, "parent": parent, "entries": entries, "roots": roots}),
    ))
}

fn settings(app: &App) -> Value {
    json!({
        "max_concurrent_runs": app.m.max_concurrent(),
        "default_max_concurrent_runs": runs::default_max_concurrent(),
        "cores": util::cores(),
        "data_dir": app.data_dir,
    })
}

async fn get_settings(State(app): State<App>) -> Json<Value> {
    Json(settings(&app))
}

async fn put_settings(State(app): State<App>, body: Bytes) -> JsonResult {
    let body = body_json(&body)?;
    if let Some(v) = body.get("max_concurrent_runs") {
        let n = v.as_u64().filter(|n| (1..=64).contains(n)).ok_or_else(|| {
            ApiError::bad_request("invalid_setting", "max_concurrent_runs: 1 to 64")
        })?;
        app.db.set_setting("max_concurrent_runs", &json!(n))?;
        app.m.wake();
    }
    Ok(Json(settings(&app)))
}
