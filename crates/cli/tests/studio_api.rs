//! `neuralforge studio` end to end: a real studio process on a loopback port (`--port 0`,
//! its own data dir) driven over HTTP, with tiny training runs on generated tokens.
//! The HTTP client is a few lines over `TcpStream` speaking HTTP/1.0 (so bodies, SSE included,
//! end with the connection and are never chunked); all traffic goes to 127.0.0.1.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_neuralforge");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-studio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A u16 token file with learnable structure, ids below 512.
fn token_file(dir: &Path) -> PathBuf {
    let bytes: Vec<u8> = (0..6000u32)
        .flat_map(|i| (((i * 7) % 97) as u16).to_le_bytes())
        .collect();
    let p = dir.join("tokens.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Train settings of a tiny run (about 3-5 ms a step on one thread).
fn config(data: &Path, steps: u64) -> Value {
    json!({"init": "tiny", "data": data, "steps": steps, "batch_size": 4, "seq_len": 32,
           "lr": 0.003, "warmup": 2, "val_split": 0.1, "val_every": 50, "val_batches": 1,
           "ckpt_every": 2, "keep_checkpoints": 2, "threads": 1})
}

struct Studio {
    child: Child,
    port: u16,
    /// The token of the printed URL, when one is in force.
    token: Option<String>,
}

impl Studio {
    fn start(data_dir: &Path, extra: &[&str]) -> Studio {
        Studio::start_on("127.0.0.1", data_dir, extra)
    }

    /// A studio bound to `host` (the tests still talk to it over 127.0.0.1).
    fn start_on(host: &str, data_dir: &Path, extra: &[&str]) -> Studio {
        let mut child = Command::new(BIN)
            .args(["studio", "--host", host, "--port", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let rest = line
            .strip_prefix(&format!("studio: listening on http://{host}:"))
            .unwrap_or_else(|| panic!("first line: {line:?}"));
        let port = rest
            .split(['/', '?'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let token = rest
            .split_once("?token=")
            .map(|(_, t)| t.trim().to_string());
        // Keep reading stdout so the studio never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Studio { child, port, token }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One request; returns (status, headers, body).
    fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.0\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {}\r\n", self.host()));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
        (status, head.to_string(), body.to_string())
    }

    fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let b = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, text) = self.raw(method, path, &[], &b);
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, Value::Null);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call("POST", path, body);
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    fn run(&self, id: i64) -> Value {
        self.get(&format!("/api/runs/{id}"))
    }

    /// Polls the run until `pred` holds.
    fn wait_run(&self, id: i64, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.run(id);
            if pred(&r) {
                return r;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self, id: i64) -> Vec<Value> {
        self.get(&format!("/api/runs/{id}/events?limit=100000"))
            .as_array()
            .unwrap()
            .clone()
    }

    fn new_project(&self, config: Value) -> i64 {
        self.post("/api/projects", json!({"name": "p", "config": config}))["id"]
            .as_i64()
            .unwrap()
    }

    fn new_run(&self, project: i64, body: Value) -> i64 {
        self.post(&format!("/api/projects/{project}/runs"), body)["id"]
            .as_i64()
            .unwrap()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Studio {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One SSE frame: (id, event, data).
type Frame = (Option<i64>, String, Value);

/// Reads frames of `path` (sending `Last-Event-ID` when given) until `enough` says so.
fn sse(
    s: &Studio,
    path: &str,
    last_id: Option<i64>,
    enough: impl Fn(&[Frame]) -> bool,
) -> Vec<Frame> {
    let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        s.host()
    );
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).unwrap();
    let mut lines = BufReader::new(tcp).lines();
    let status = lines.next().unwrap().unwrap();
    assert!(status.contains(" 200 "), "{status}");
    for l in lines.by_ref() {
        if l.unwrap().is_empty() {
            break;
        }
    }
    let (mut frames, mut id, mut event) = (Vec::new(), None, String::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    for l in lines {
        let l = l.expect("stream ended early");
        if let Some(v) = l.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = l.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            frames.push((
                id.take(),
                std::mem::take(&mut event),
                serde_json::from_str(v).unwrap(),
            ));
            if enough(&frames) {
                return frames;
            }
        }
        assert!(Instant::now() < deadline, "stream: not enough after 60 s");
    }
    panic!("stream closed");
}

fn has(events: &[Value], pred: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(pred)
}

fn supports_dry_run() -> bool {
    let o = Command::new(BIN)
        .args(["train", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("--dry-run")
}

#[test]
fn project_validate_run_stream_stop_resume_delete() {
    let d = tmp("life");
    let data = token_file(&d);
    let s = Studio::start(&d.join("studio"), &[]);
    assert_eq!(s.get("/api/health")["ok"], true);
    let presets = s.get("/api/presets");
    assert!(presets.as_array().unwrap().len() >= 4);

    // Validation: a missing path is named; a good config is resolved by the CLI itself.
    let v = s.post(
        "/api/validate",
        json!({"config": {"init": "tiny", "data": d.join("nope.bin")}}),
    );
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["code"], "missing_path");
    let v = s.post("/api/validate", json!({"config": config(&data, 5)}));
    if supports_dry_run() {
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["plan"]["tokens_per_step"].as_u64().unwrap() > 0, "{v}");
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(v["free_memory_bytes"].as_u64().unwrap() > 0, "{v}");
        }
    } else {
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("dry-run"),
            "{v}"
        );
    }
    assert_eq!(v["command"][1], "train");

    let p = s.new_project(config(&data, 5000));
    assert_eq!(
        s.get(&format!("/api/projects/{p}"))["config"]["steps"],
        5000
    );
    let id = s.new_run(p, json!({"config": {"ckpt_every": 3}}));
    let run = s.run(id);
    assert_eq!(run["config"]["ckpt_every"], 3);
    assert!(run["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--ckpt-every=3"));

    // Stream until a few optimizer steps and a checkpoint went by.
    let frames = sse(&s, &format!("/api/runs/{id}/stream"), None, |f| {
        f.iter()
            .any(|(_, e, d)| e == "checkpoint" && d["step"].as_u64() >= Some(3))
    });
    assert_eq!(frames[0].1, "status", "the run's state comes first");
    let ids: Vec<i64> = frames.iter().filter_map(|f| f.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    for (fid, event, data) in frames.iter().filter(|f| f.0.is_some()) {
        assert_eq!(data["id"].as_i64(), *fid);
        assert_eq!(data["type"].as_str(), Some(event.as_str()));
    }
    // Reconnect from the middle: exactly the events after Last-Event-ID, in order.
    let mid = ids[ids.len() / 2];
    let again = sse(&s, &format!("/api/runs/{id}/stream"), Some(mid), |f| {
        f.iter().filter(|x| x.0.is_some()).count() >= 20
    });
    let got: Vec<i64> = again.iter().filter_map(|f| f.0).collect();
    let stored: Vec<i64> = s
        .get(&format!("/api/runs/{id}/events?after={mid}&limit=20"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got[..20], stored[..], "replay after {mid}");

    // Stop = SIGINT: checkpoint, `done` interrupted.
    s.post(&format!("/api/runs/{id}/stop"), Value::Null);
    let r = s.wait_run(id, "interrupted", 30, |r| r["status"] == "interrupted");
    assert_eq!(r["exit_code"], 130, "{r}");
    let events = s.events(id);
    assert!(has(&events, |e| e["type"] == "done" && e["interrupted"] == true));
    let stopped_at = r["summary"]["last_checkpoint"]["step"].as_u64().unwrap();

    // Resume: `train --resume`, a restart event from the child, steps go on.
    s.post(&format!("/api/runs/{id}/resume"), Value::Null);
    s.wait_run(id, "resumed past the checkpoint", 30, |r| {
        r["status"] == "running" && r["summary"]["step"].as_u64() > Some(stopped_at + 2)
    });
    let events = s.events(id);
    assert!(has(&events, |e| e["type"] == "restart"
        && e["step"] == stopped_at));
    let (code, _) = s.call("DELETE", &format!("/api/runs/{id}"), Value::Null);
    assert_eq!(code, 409, "a running run is not deleted");
    s.post(&format!("/api/runs/{id}/stop"), Value::Null);
    let r = s.wait_run(id, "interrupted again", 30, |r| {
        r["status"] == "interrupted"
    });
    let run_dir = PathBuf::from(r["run_dir"].as_str().unwrap());
    assert!(run_dir.join("events.ndjson").is_file());
    assert!(!s.get(&format!("/api/runs/{id}/log")).is_null());
    let csv = s
        .raw("GET", &format!("/api/runs/{id}/export?format=csv"), &[], "")
        .2;
    assert!(csv.starts_with("event_id,type,step"), "{csv}");
    let models = s.get(&format!("/api/runs/{id}/models"));
    assert!(has(models.as_array().unwrap(), |m| m["kind"] == "checkpoint"));

    let (code, v) = s.call(
        "DELETE",
        &format!("/api/runs/{id}?delete_files=true"),
        Value::Null,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["files_removed"], true);
    assert!(!run_dir.exists());
    assert_eq!(
        s.call("GET", &format!("/api/runs/{id}"), Value::Null).0,
        404
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_queue_runs_one_at_a_time_in_its_order() {
    let d = tmp("queue");
    let data = token_file(&d);
    let s = Studio::start(&d.join("studio"), &[]);
    let (code, _) = s.call("PUT", "/api/settings", json!({"max_concurrent_runs": 1}));
    assert_eq!(code, 200);
    let p = s.new_project(config(&data, 120));
    let a = s.new_run(p, json!({}));
    let b = s.new_run(p, json!({}));
    let c = s.new_run(p, json!({}));
    s.wait_run(a, "a running", 20, |r| r["status"] == "running");
    // c before b; then b is cancelled.
    let q = s.post("/api/queue", json!({"order": [c, b]}));
    let order: Vec<i64> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![c, b]);
    assert_eq!(s.run(c)["queue_pos"], 0);
    assert_eq!(s.run(b)["status"], "queued");
    s.post(&format!("/api/runs/{b}/cancel"), Value::Null);
    assert_eq!(s.run(b)["status"], "cancelled");
    let ra = s.wait_run(a, "a done", 60, |r| r["status"] == "done");
    let rc = s.wait_run(c, "c done", 60, |r| r["status"] == "done");
    assert!(
        rc["started_at"].as_f64() >= ra["ended_at"].as_f64(),
        "{ra} {rc}"
    );
    assert_eq!(rc["summary"]["step"], 120);
    assert_eq!(s.run(b)["started_at"], Value::Null);
    let list = s.get(&format!("/api/runs?project={p}&status=done"));
    assert_eq!(list.as_array().unwrap().len(), 2);
    let cmp = s.get(&format!("/api/compare?runs={a},{c}"));
    assert_eq!(cmp["runs"].as_array().unwrap().len(), 2);
    assert_eq!(cmp["config_diff"], json!([]));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_child_killed_with_sigkill_is_resumed_automatically() {
    let d = tmp("kill9");
    let data = token_file(&d);
    let s = Studio::start(&d.join("studio"), &[]);
    let p = s.new_project(config(&data, 400));
    let id = s.new_run(p, json!({"auto_resume": true, "max_restarts": 2}));
    let r = s.wait_run(id, "a checkpoint", 30, |r| {
        r["status"] == "running" && r["summary"]["last_checkpoint"]["step"].as_u64() >= Some(2)
    });
    let pid = r["pid"].as_i64().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let r = s.wait_run(id, "done after the restart", 60, |r| r["status"] == "done");
    assert_eq!(r["restarts"], 1, "{r}");
    assert_eq!(r["summary"]["step"], 400);
    let events = s.events(id);
    let restart = events
        .iter()
        .find(|e| e["type"] == "restart" && e["source"] == "studio")
        .expect("a stored restart event");
    assert!(
        restart["reason"].as_str().unwrap().contains("signal 9"),
        "{restart}"
    );
    assert!(has(&events, |e| e["type"] == "done"));
    // The series carries the restart as a marker.
    let series = s.get(&format!("/api/runs/{id}/series?metric=loss&buckets=50"));
    assert!(has(series["markers"].as_array().unwrap(), |m| m["kind"]
        == "restart"));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn restarting_the_studio_recovers_a_run_in_flight() {
    let d = tmp("restart");
    let data = token_file(&d);
    let dir = d.join("studio");
    let mut s = Studio::start(&dir, &[]);
    let p = s.new_project(config(&data, 3000));
    let id = s.new_run(p, json!({}));
    let before = s.wait_run(id, "a checkpoint", 30, |r| {
        r["status"] == "running" && r["summary"]["last_checkpoint"]["step"].as_u64() >= Some(2)
    });
    let old_pid = before["pid"].as_i64().unwrap();
    s.kill9();
    drop(s);
    // The child got SIGINT with the studio's death; the new studio journals what it wrote
    // meanwhile and resumes the run (auto-resume on by default).
    let s = Studio::start(&dir, &[]);
    let r = s.wait_run(id, "resumed", 60, |r| {
        r["status"] == "running" && r["restarts"] == 1
    });
    assert_ne!(r["pid"].as_i64(), Some(old_pid));
    let events = s.events(id);
    let studio_restart = events
        .iter()
        .position(|e| e["type"] == "restart" && e["source"] == "studio")
        .expect("studio restart event");
    // What the child wrote to its folder while no studio read its stdout (its SIGINT
    // checkpoint, `done`) is journaled before the studio's restart event: the store then
    // holds exactly the folder's lines.
    let file =
        std::fs::read_to_string(Path::new(r["run_dir"].as_str().unwrap()).join("events.ndjson"))
            .unwrap();
    let in_file = file
        .lines()
        .position(|l| l.contains("\"source\":\"studio\""))
        .expect("the studio's restart event in events.ndjson");
    assert_eq!(in_file, studio_restart, "stored and folder streams differ");
    s.post(&format!("/api/runs/{id}/stop"), Value::Null);
    s.wait_run(id, "interrupted", 30, |r| r["status"] == "interrupted");
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_token_in_force_guards_api_stream_and_assets() {
    let d = tmp("token");
    let s = Studio::start(&d.join("studio"), &["--token", "s3cret"]);
    for path in ["/api/health", "/api/runs/1/stream", "/"] {
        assert_eq!(s.raw("GET", path, &[], "").0, 401, "{path}");
    }
    assert_eq!(
        s.raw(
            "GET",
            "/api/health",
            &[("Authorization", "Bearer nope")],
            ""
        )
        .0,
        401
    );
    assert_eq!(
        s.raw(
            "GET",
            "/api/health",
            &[("Authorization", "Bearer s3cret")],
            ""
        )
        .0,
        200
    );
    let (code, head, _) = s.raw("GET", "/?token=s3cret", &[], "");
    assert_eq!(code, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(s.raw("GET", "/api/health", &[("Cookie", pair)], "").0, 200);
    assert_eq!(s.raw("GET", "/", &[("Cookie", pair)], "").0, 200);
    assert!(!head.to_ascii_lowercase().contains("access-control-allow"));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wrong_host_or_origin_is_refused_and_shell_metacharacters_are_just_a_path() {
    let d = tmp("guard");
    let s = Studio::start(&d.join("studio"), &[]);
    assert_eq!(
        s.raw("GET", "/api/health", &[("Host", "evil.example:1")], "")
            .0,
        421
    );
    let rebound = format!("evil.example:{}", s.port);
    assert_eq!(
        s.raw("GET", "/api/health", &[("Host", &rebound)], "").0,
        421
    );
    let body = r#"{"name":"x","config":{}}"#;
    let (code, _, text) = s.raw(
        "POST",
        "/api/projects",
        &[("Origin", "http://evil.example")],
        body,
    );
    assert_eq!(code, 403, "{text}");
    let own = format!("http://{}", s.host());
    assert_eq!(
        s.raw("POST", "/api/projects", &[("Origin", &own)], body).0,
        201
    );
    let (code, head, _) = s.raw(
        "GET",
        "/api/health",
        &[("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(code, 200);
    assert!(
        !head.to_ascii_lowercase().contains("access-control-allow"),
        "{head}"
    );

    let victim = d.join("pwned");
    let evil = format!(
        "{}; touch {} $(touch {})",
        d.join("x").display(),
        victim.display(),
        victim.display()
    );
    let v = s.post(
        "/api/validate",
        json!({"config": {"init": "tiny", "data": evil}}),
    );
    assert_eq!(v["error"]["code"], "missing_path", "{v}");
    let p = s.new_project(json!({"init": "tiny", "data": evil}));
    let (code, v) = s.call("POST", &format!("/api/projects/{p}/runs"), json!({}));
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("missing_path")),
        "{v}"
    );
    let (code, _) = s.call("GET", &format!("/api/fs?path={}", "/etc"), Value::Null);
    assert_eq!(code, 403);
    assert!(!victim.exists());
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn run_folders_are_the_source_of_truth() {
    let d = tmp("folders");
    let dir = d.join("studio");
    // A run folder written by hand: a NaN loss (null) and a spike must survive bucketing.
    let folder = d.join("external");
    std::fs::create_dir_all(&folder).unwrap();
    let mut lines = vec![json!({"type": "info", "key": "plan",
        "value": {"tokens_per_step": 100, "total_tokens": 100_000}})];
    for b in 1..=1000u64 {
        let loss = match b {
            500 => Value::Null,
            700 => json!(50.0),
            _ => json!(3.0 - b as f64 / 1000.0),
        };
        lines.push(
            json!({"type": "step", "step": b, "total": 1000, "loss": loss, "lr": 0.001,
                          "ms": 2.0, "tokens_per_s": 1000.0, "gflops": 1.0}),
        );
        lines.push(
            json!({"type": "batch", "batch": b, "step": b, "avg_loss": loss,
                          "best_loss": 2.0, "train_ms": 2.0, "mfu": 0.25,
                          "peak_rss_bytes": 1000 + (b % 7) * 100}),
        );
    }
    lines
        .push(json!({"type": "done", "total_steps": 1000, "final_loss": 2.0, "total_time_s": 2.0}));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(folder.join("events.ndjson"), &text).unwrap();

    let s = Studio::start(&dir, &[]);
    let r = s.post("/api/runs/import", json!({"path": folder}));
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["status"], "done");
    // The MFU and peak-memory cards: the last MFU, the largest peak reported.
    assert_eq!(r["summary"]["mfu"], 0.25, "{r}");
    assert_eq!(r["summary"]["peak_rss"], 1600, "{r}");
    let series = s.get(&format!(
        "/api/runs/{id}/series?metric=loss&x=step&buckets=10"
    ));
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    let total: u64 = points.iter().map(|p| p[4].as_u64().unwrap()).sum();
    assert_eq!(total, 1000);
    let nonfinite: u64 = points
        .iter()
        .filter_map(|p| p.get(5))
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(nonfinite, 1, "{series}");
    let max = points
        .iter()
        .filter_map(|p| p[2].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(max, 50.0, "the spike is kept");
    let by_tokens = s.get(&format!(
        "/api/runs/{id}/series?metric=loss&x=tokens&buckets=4"
    ));
    assert_eq!(by_tokens["x_range"], json!([100, 100000]));
    let zoom = s.get(&format!(
        "/api/runs/{id}/series?metric=loss&from=690&to=710&buckets=100"
    ));
    assert_eq!(zoom["points"].as_array().unwrap().len(), 21, "zoom refines");

    // A folder that appears in the runs folder shows up in the list; --reindex rebuilds.
    let runs_dir = dir.join("runs").join("from-cli");
    std::fs::create_dir_all(&runs_dir).unwrap();
    std::fs::write(runs_dir.join("events.ndjson"), &text).unwrap();
    let list = s.get("/api/runs");
    assert!(has(list.as_array().unwrap(), |r| r["name"] == "from-cli"));
    let n_before = s.events(id).len();
    assert_eq!(n_before, lines.len());
    drop(s);
    let out = Command::new(BIN)
        .args(["studio", "--port", "0", "--reindex", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("studio: reindexed 2 runs"), "{first}");
    let _ = std::fs::remove_dir_all(&d);
}

/// This machine's address on its first non-loopback interface (no packet is sent: a UDP
/// socket is only "connected" to learn which local address the route would use).
fn own_non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.254:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// One HTTP/1.0 request to `ip:port`; returns (status, body).
fn raw_to(
    ip: std::net::IpAddr,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    (status, body.to_string())
}

#[test]
fn a_non_loopback_bind_generates_a_token_and_refuses_requests_without_it() {
    let d = tmp("exposed");
    let s = Studio::start_on("0.0.0.0", &d.join("studio"), &[]);
    let token = s
        .token
        .clone()
        .expect("a token is generated and printed in the URL");
    assert!(token.len() >= 16, "{token}");
    // Without the token: API, stream and assets are refused.
    for path in [
        "/api/health",
        "/api/runs",
        "/api/runs/1/stream",
        "/",
        "/app.js",
    ] {
        assert_eq!(s.raw("GET", path, &[], "").0, 401, "{path}");
    }
    let (code, _, _) = s.raw("POST", "/api/projects", &[], r#"{"name":"x","config":{}}"#);
    assert_eq!(code, 401, "a state-changing request without the token");
    let bearer = format!("Bearer {token}");
    assert_eq!(
        s.raw(
            "GET",
            "/api/health",
            &[("Authorization", "Bearer wrong")],
            ""
        )
        .0,
        401
    );
    assert_eq!(
        s.raw("GET", "/api/health", &[("Authorization", &bearer)], "")
            .0,
        200
    );
    // The URL's token becomes a cookie, which then opens API and stream.
    let (code, head, _) = s.raw("GET", &format!("/?token={token}"), &[], "");
    assert_eq!(code, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(s.raw("GET", "/api/runs", &[("Cookie", &cookie)], "").0, 200);
    let p = {
        let (code, _, body) = s.raw(
            "POST",
            "/api/projects",
            &[("Cookie", &cookie)],
            r#"{"name":"x","config":{}}"#,
        );
        assert_eq!(code, 201, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    assert!(p > 0);
    // The stream answers with the cookie (a run of an imported folder to follow).
    let folder = d.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("events.ndjson"),
        "{\"type\":\"phase\",\"phase\":\"training\"}\n",
    )
    .unwrap();
    let (code, _, body) = s.raw(
        "POST",
        "/api/runs/import",
        &[("Authorization", &bearer)],
        &json!({"path": folder}).to_string(),
    );
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    {
        let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!(
            "GET /api/runs/{id}/stream HTTP/1.0\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
            s.host()
        );
        tcp.write_all(req.as_bytes()).unwrap();
        let mut first = String::new();
        BufReader::new(tcp).read_line(&mut first).unwrap();
        assert!(first.contains(" 200 "), "{first}");
    }
    // Wrong Host (DNS rebinding) and wrong Origin (CSRF) are refused even with the token.
    let rebound = format!("evil.example:{}", s.port);
    assert_eq!(
        s.raw(
            "GET",
            "/api/health",
            &[("Host", &rebound), ("Authorization", &bearer)],
            ""
        )
        .0,
        421
    );
    let (code, _, _) = s.raw(
        "POST",
        "/api/projects",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
        r#"{"name":"x","config":{}}"#,
    );
    assert_eq!(code, 403);

    // A client beyond loopback: error texts name no absolute path outside the data dir.
    match own_non_loopback_ip() {
        None => eprintln!("skipped the non-loopback client part: no non-loopback address"),
        Some(ip) => {
            let (code, _) = raw_to(ip, s.port, "GET", "/api/health", &[], "");
            assert_eq!(code, 401, "a remote client without the token");
            let secret = d.join("private-folder").join("data.bin");
            let body = json!({"config": {"init": "tiny", "data": secret}}).to_string();
            let (code, text) = raw_to(
                ip,
                s.port,
                "POST",
                "/api/validate",
                &[("Authorization", &bearer)],
                &body,
            );
            assert_eq!(code, 200, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "missing_path", "{v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("data:") && msg.contains("data.bin"),
                "{msg}"
            );
            assert!(!text.contains("private-folder"), "a path leaked: {text}");
            let body = json!({"path": secret}).to_string();
            let (code, text) = raw_to(
                ip,
                s.port,
                "POST",
                "/api/runs/import",
                &[("Authorization", &bearer)],
                &body,
            );
            assert_eq!(code, 400, "{text}");
            assert!(!text.contains("private-folder"), "a path leaked: {text}");
            // The same request from loopback keeps the full path (the user's own machine).
            let (_, _, text) = s.raw(
                "POST",
                "/api/runs/import",
                &[("Authorization", &bearer)],
                &body,
            );
            assert!(text.contains("private-folder"), "{text}");
        }
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn shell_metacharacters_in_any_path_field_are_only_a_missing_path() {
    let d = tmp("metachar");
    let s = Studio::start(&d.join("studio"), &[]);
    let victim = std::env::temp_dir().join(format!("nf-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&victim);
    let evil = format!("$(touch {}); x", victim.display());
    let evil2 = format!("`touch {}`|x&&touch {}", victim.display(), victim.display());
    for bad in [&evil, &evil2] {
        let v = s.post(
            "/api/validate",
            json!({"config": {"init": "tiny", "data": bad}}),
        );
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error"]["code"], "missing_path", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("data:"),
            "{v}"
        );
        for (path, body, field) in [
            ("/api/runs/import", json!({"path": bad}), "path"),
            (
                "/api/ingest",
                json!({"inputs": [bad], "tokenizer": bad}),
                "inputs",
            ),
            ("/api/import", json!({"source": bad}), "source"),
            (
                "/api/export",
                json!({"source": bad, "format": "gguf"}),
                "source",
            ),
            (
                "/api/generate",
                json!({"model": bad, "prompt": "hi"}),
                "model",
            ),
        ] {
            let (code, v) = s.call("POST", path, body);
            assert_eq!(code, 400, "{path}: {v}");
            assert_eq!(v["code"], "missing_path", "{path}: {v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{field}:")),
                "{path}: {v}"
            );
        }
        let (code, v) = s.call(
            "GET",
            &format!(
                "/api/datasets/stats?path={}",
                bad.replace(' ', "%20")
                    .replace('&', "%26")
                    .replace('`', "%60")
                    .replace('|', "%7C")
                    .replace('$', "%24")
                    .replace(';', "%3B")
            ),
            Value::Null,
        );
        assert_eq!(code, 400, "{v}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!victim.exists(), "a shell ran the path");
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_cli_run_in_flight_in_the_runs_folder_is_shown_running_and_followed() {
    let d = tmp("clirun");
    let data = token_file(&d);
    let dir = d.join("studio");
    let s = Studio::start(&dir, &[]);
    let out = dir.join("runs").join("from-cli-live");
    let mut cli = Command::new(BIN)
        .args([
            "train",
            "--json",
            "--init",
            "tiny",
            "--steps",
            "3000",
            "--batch-size",
            "4",
        ])
        .args([
            "--seq-len",
            "32",
            "--threads",
            "1",
            "--ckpt-every",
            "1000",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the CLI wrote some steps, then let the studio find the folder.
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(out.join("events.ndjson"))
        .map_or(0, |t| t.matches("\"type\":\"batch\"").count())
        < 5
    {
        assert!(Instant::now() < end, "the CLI run wrote no steps");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = s.get("/api/runs");
    let run = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "from-cli-live")
        .expect("the CLI run is listed")
        .clone();
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["pid"].as_i64(), Some(cli.id() as i64), "{run}");
    let first = run["summary"]["step"].as_u64().unwrap_or(0);
    // The studio follows the folder: the stored step grows while the CLI trains.
    s.wait_run(id, "the followed run to grow", 60, |r| {
        r["summary"]["step"].as_u64() > Some(first + 20) || r["status"] == "done"
    });
    assert!(cli.wait().unwrap().success());
    let r = s.wait_run(id, "done", 30, |r| r["status"] == "done");
    assert_eq!(r["summary"]["step"], 3000, "{r}");
    assert_eq!(r["pid"], Value::Null);
    // Every line of the folder is stored once, in order.
    let file = std::fs::read_to_string(out.join("events.ndjson")).unwrap();
    assert_eq!(s.events(id).len(), file.lines().count());
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

/// Polls a job until it leaves `running`; returns it.
fn wait_job(s: &Studio, job: &Value) -> Value {
    let id = job["id"].as_i64().expect("job id");
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let j = s.get(&format!("/api/jobs/{id}"));
        if j["status"] != "running" {
            return j;
        }
        assert!(Instant::now() < end, "job {id} still running: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small English-like corpus for the tokenizer and ingest.
fn corpus(dir: &Path) -> PathBuf {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "with", "ball",
    ];
    let mut x: u64 = 7;
    let mut text = String::new();
    for line in 0..600 {
        for w in 0..8 + line % 5 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if w > 0 {
                text.push(' ');
            }
            text.push_str(words[(x >> 33) as usize % words.len()]);
        }
        text.push_str(".\n");
    }
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn ingest_export_import_and_generate_jobs_run_the_cli() {
    let d = tmp("jobs");
    let text = corpus(&d);
    let tok_dir = d.join("tok");
    let o = Command::new(BIN)
        .args(["tokenizer", "train", "--vocab-size", "512", "--out"])
        .arg(&tok_dir)
        .arg(&text)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tok = tok_dir.join("tokenizer.json");
    let s = Studio::start(&d.join("studio"), &[]);

    // Ingest: a dataset folder whose stats the Data view reads.
    let j = wait_job(
        &s,
        &s.post(
            "/api/ingest",
            json!({"inputs": [text], "tokenizer": tok, "val_split": 0.1}),
        ),
    );
    assert_eq!(j["status"], "done", "{j}");
    let dataset = j["result"]["path"]
        .as_str()
        .expect("dataset path")
        .to_string();
    assert!(Path::new(&dataset).join("manifest.json").is_file(), "{j}");
    let stats = s.get(&format!("/api/datasets/stats?path={dataset}"));
    assert!(!stats["info"].as_object().unwrap().is_empty(), "{stats}");

    // A finished tiny run gives the model the other jobs work on.
    let data = token_file(&d);
    let p = s.new_project(config(&data, 4));
    let id = s.new_run(p, json!({}));
    s.wait_run(id, "the run to finish", 120, |r| r["status"] == "done");
    let models = s.get(&format!("/api/runs/{id}/models"));
    let final_model = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "final")
        .unwrap_or_else(|| panic!("no final model: {models}"))["path"]
        .as_str()
        .unwrap()
        .to_string();

    // Export to GGUF: a file with GGUF's magic, its size reported.
    let j = wait_job(
        &s,
        &s.post(
            "/api/export",
            json!({"source": final_model, "format": "gguf", "dtype": "q8_0"}),
        ),
    );
    assert_eq!(j["status"], "done", "{j}");
    let gguf = j["result"]["path"]
        .as_str()
        .expect("export path")
        .to_string();
    let bytes = std::fs::read(&gguf).unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(
        j["result"]["bytes"].as_u64(),
        Some(bytes.len() as u64),
        "{j}"
    );

    // Import that GGUF back into a native folder.
    let j = wait_job(&s, &s.post("/api/import", json!({"source": gguf})));
    assert_eq!(j["status"], "done", "{j}");
    let imported = j["result"]["path"]
        .as_str()
        .expect("import path")
        .to_string();
    assert!(Path::new(&imported).join("config.json").is_file(), "{j}");

    // Generate from the exported file: tokens stream, then the generation is stored.
    let g = s.post(
        "/api/generate",
        json!({"model": gguf, "tokenizer": tok, "prompt": "the cat", "max_tokens": 6,
               "temp": 0.0, "seed": 1}),
    );
    let gid = g["id"].as_i64().unwrap();
    let frames = sse(&s, &format!("/api/generate/{gid}/stream"), None, |f| {
        f.iter().any(|(_, e, _)| e == "generate_done")
    });
    let tokens = frames.iter().filter(|(_, e, _)| e == "token").count();
    assert!((1..=6).contains(&tokens), "{frames:?}");
    let end = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let list = s.get("/api/generations");
        let g = list
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == gid)
            .cloned();
        if let Some(g) = g.filter(|g| g["status"] != "running") {
            break g;
        }
        assert!(Instant::now() < end, "generation {gid} not stored");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stored["status"], "done", "{stored}");
    assert!(
        !stored["output"].as_str().unwrap_or("").is_empty(),
        "{stored}"
    );

    // Token probabilities: each token event carries its log-probability and the top 3, the
    // greedy token first; an out-of-range count is a 400 before anything starts.
    let g = s.post(
        "/api/generate",
        json!({"model": gguf, "tokenizer": tok, "prompt": "the cat", "max_tokens": 4,
               "temp": 0.0, "logprobs": 3}),
    );
    let gid = g["id"].as_i64().unwrap();
    let frames = sse(&s, &format!("/api/generate/{gid}/stream"), None, |f| {
        f.iter().any(|(_, e, _)| e == "generate_done")
    });
    let tokens: Vec<&Value> = frames
        .iter()
        .filter(|(_, e, _)| e == "token")
        .map(|(_, _, v)| v)
        .collect();
    assert!(!tokens.is_empty(), "{frames:?}");
    for t in tokens {
        let top = t["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 3, "{t}");
        assert_eq!(
            top[0]["token_id"], t["token_id"],
            "greedy picks the most likely: {t}"
        );
        let lp = t["logprob"].as_f64().expect("logprob");
        assert!(
            lp <= 0.0 && lp == top[0]["logprob"].as_f64().unwrap(),
            "{t}"
        );
    }
    for bad in [json!(21), json!(-1), json!("five"), json!(2.5)] {
        let (code, v) = s.call(
            "POST",
            "/api/generate",
            json!({"model": gguf, "prompt": "x", "logprobs": bad}),
        );
        assert_eq!(code, 400, "logprobs {bad}: {v}");
        assert!(v.to_string().contains("logprobs"), "{v}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}
