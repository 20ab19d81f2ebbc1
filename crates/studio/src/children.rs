//! Short child commands (dry validation, option schema, dataset stats and preview): run with
//! an argument vector and a time limit, NDJSON parsed.

use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Every stdout line that is a JSON object.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The last `error` event, or a message made from stderr.
    pub fn error(&self) -> Option<Value> {
        let last = self
            .events()
            .into_iter()
            .rev()
            .find(|e| e["type"] == "error");
        match (last, self.code) {
            (Some(e), _) => Some(serde_json::json!({"message": e["message"], "code": e["code"]})),
            (None, Some(0)) => None,
            (None, code) => {
                // clap and anyhow say what went wrong on a line starting with "error:".
                let mut lines = self.stderr.lines().rev();
                let tail: String = lines
                    .clone()
                    .find(|l| l.trim_start().starts_with("error:"))
                    .or_else(|| lines.find(|l| !l.trim().is_empty()))
                    .unwrap_or("the command failed")
                    .chars()
                    .take(500)
                    .collect();
                let code = if code.is_none() { "timeout" } else { "failed" };
                Some(serde_json::json!({"message": tail, "code": code}))
            }
        }
    }
}

/// Runs `exe args...` in `cwd`; kills it after `limit`.
pub fn run(exe: &Path, args: &[String], cwd: &Path, limit: Duration) -> std::io::Result<Finished> {
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(1 << 20).read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        code,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}
