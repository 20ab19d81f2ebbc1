//! `neuralforge train` end to end on the tiny preset: the NDJSON stream, exact resume after
//! `kill -9` and after SIGINT, and the errors for bad inputs.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_neuralforge");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tests' token file: a noisy counter, ids below 512.
fn token_file(dir: &Path, n: usize) -> PathBuf {
    common::counter_tokens(dir, n, 12345, 7, 97)
}

fn base_args(data: &Path, out: &Path, steps: u64) -> Vec<String> {
    [
        "--json",
        "train",
        "--init",
        "tiny",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--accum",
        "2",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--val-split",
        "0.1",
        "--val-every",
        "4",
        "--val-batches",
        "2",
        "--ckpt-every",
        "2",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn parse_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// (step, avg_loss as its exact JSON text) of every batch event.
fn batch_losses(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "batch")
        .map(|e| (e["batch"].as_u64().unwrap(), e["avg_loss"].to_string()))
        .collect()
}

fn run(args: &[String]) -> (i32, Vec<Value>, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    (
        o.status.code().unwrap_or(-1),
        parse_lines(&stdout),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const REQUIRED: &[(&str, &[&str])] = &[
    (
        "init",
        &[
            "params",
            "layers",
            "dim",
            "hidden",
            "heads",
            "seq",
            "vocab",
            "timestamp",
            "protocol",
            "device",
            "threads",
            "trainable_params",
            "mode",
        ],
    ),
    ("phase", &["phase"]),
    (
        "step",
        &[
            "step",
            "total",
            "loss",
            "lr",
            "ms",
            "tokens_per_s",
            "gflops",
        ],
    ),
    (
        "batch",
        &["batch", "step", "avg_loss", "best_loss", "train_ms"],
    ),
    ("val", &["step", "val_loss", "val_batches"]),
    ("checkpoint", &["path", "step", "loss"]),
    ("restart", &["step", "reason"]),
    ("done", &["total_steps", "final_loss", "total_time_s"]),
    ("error", &["message", "code"]),
    ("info", &["key", "value"]),
];

fn check_fields(e: &Value) {
    let ty = e["type"].as_str().expect("type");
    let (_, fields) = REQUIRED
        .iter()
        .find(|(t, _)| *t == ty)
        .unwrap_or_else(|| panic!("unexpected event type {ty}"));
    for f in *fields {
        assert!(e.get(*f).is_some(), "{ty} lacks {f}: {e}");
    }
}

#[test]
fn ndjson_stream_and_run_folder() {
    let d = tmp("ndjson");
    let data = token_file(&d, 6000);
    let out = d.join("run");
    let (code, events, stderr) = run(&base_args(&data, &out, 8));
    assert_eq!(code, 0, "{stderr}");
    for e in &events {
        check_fields(e);
    }
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(events[0]["type"], "phase");
    assert_eq!(count("init"), 1);
    assert_eq!(count("step"), 16);
    assert_eq!(count("batch"), 8);
    assert_eq!(count("val"), 3); // steps 0, 4 and 8
    assert_eq!(count("done"), 1);
    assert!(count("checkpoint") >= 4);
    for b in events.iter().filter(|e| e["type"] == "batch") {
        let mfu = b["mfu"].as_f64().expect("batch carries mfu");
        assert!(mfu > 0.0 && mfu < 1.5, "mfu {mfu} out of range: {b}");
        if cfg!(target_os = "linux") {
            assert!(b["peak_rss_bytes"].as_u64() > Some(1 << 20), "{b}");
        }
    }
    let init = events.iter().find(|e| e["type"] == "init").unwrap();
    assert_eq!(init["mode"], "pretrain");
    assert!(init["device"]
        .as_str()
        .unwrap()
        .starts_with("cpu (1 threads"));
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["total_steps"], 8);
    assert!(done.get("interrupted").is_none());
    // Loss falls on this learnable stream.
    let losses = batch_losses(&events);
    let first: f64 = losses[0].1.parse().unwrap();
    let last: f64 = losses[7].1.parse().unwrap();
    assert!(last < first, "{first} -> {last}");
    // The run folder: resolved config, every event, checkpoints (3 kept), best and final model.
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("steps = 8") && cfg.contains("lr_min"), "{cfg}");
    let logged = std::fs::read_to_string(out.join("events.ndjson")).unwrap();
    assert_eq!(parse_lines(&logged), events);
    let ckpts: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(ckpts.contains(&"step-000008".to_string()), "{ckpts:?}");
    assert!(ckpts.contains(&"latest".to_string()));
    assert_eq!(ckpts.iter().filter(|n| n.starts_with("step-")).count(), 3);
    for f in ["config.json", "model.safetensors"] {
        assert!(out.join("model").join(f).is_file(), "model/{f}");
        assert!(out.join("best").join(f).is_file(), "best/{f}");
    }
    // Human logs went to stderr, not stdout.
    assert!(stderr.contains("tokens/step"), "{stderr}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn resume_after_kill_9_repeats_the_exact_loss_sequence() {
    let d = tmp("kill9");
    let data = token_file(&d, 6000);
    let steps = 14;
    let (code, reference, stderr) = run(&base_args(&data, &d.join("ref"), steps));
    assert_eq!(code, 0, "{stderr}");
    let reference = batch_losses(&reference);
    assert_eq!(reference.len(), steps as usize);

    let out = d.join("killed");
    let mut child = Command::new(BIN)
        .args(base_args(&data, &out, steps))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut before = Vec::new();
    for line in reader.lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        before.push(e.clone());
        // Kill in the middle of the run, right after a batch (not at a checkpoint boundary).
        if e["type"] == "batch" && e["batch"] == 7 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let got = batch_losses(&before);
    assert_eq!(got[..], reference[..got.len()]);

    let mut args = base_args(&data, &out, steps);
    args.push("--resume".into());
    let (code, resumed, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let restart = resumed.iter().find(|e| e["type"] == "restart").unwrap();
    let from = restart["step"].as_u64().unwrap();
    assert!((2..=7).contains(&from), "{restart}");
    let after = batch_losses(&resumed);
    assert_eq!(after.len() as u64, steps - from);
    assert_eq!(
        after[..],
        reference[from as usize..],
        "resumed losses differ"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sigint_checkpoints_reports_and_resumes_exactly() {
    let d = tmp("sigint");
    let data = token_file(&d, 6000);
    let steps = 100;
    let out = d.join("run");
    let args = replace(
        replace(base_args(&data, &out, steps), "--ckpt-every", "1000"),
        "--val-every",
        "0",
    );
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for line in lines.by_ref() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let is_batch_3 = e["type"] == "batch" && e["batch"] == 3;
        events.push(e);
        if is_batch_3 {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    for line in lines {
        events.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    let n = events.len();
    assert_eq!(events[n - 1]["type"], "done", "{:?}", &events[n - 3..]);
    assert_eq!(events[n - 1]["interrupted"], true);
    let ckpt = events
        .iter()
        .rev()
        .find(|e| e["type"] == "checkpoint")
        .unwrap();
    let at = ckpt["step"].as_u64().unwrap();
    assert!(at >= 3 && at < steps, "{ckpt}");
    assert_eq!(events[n - 1]["total_steps"], at);
    let before = batch_losses(&events);
    assert_eq!(before.len() as u64, at);

    // Resume to the end and compare with an uninterrupted run of the same length.
    let mut r = args.clone();
    r.push("--resume".into());
    let (code, _, stderr) = run(&r);
    assert_eq!(code, 0, "{stderr}");
    let (code, reference, stderr) = run(&replace(
        replace(
            base_args(&data, &d.join("ref"), steps),
            "--ckpt-every",
            "1000",
        ),
        "--val-every",
        "0",
    ));
    assert_eq!(code, 0, "{stderr}");
    let reference = batch_losses(&reference);
    let logged = parse_lines(&std::fs::read_to_string(out.join("events.ndjson")).unwrap());
    let restart_at = logged.iter().position(|e| e["type"] == "restart").unwrap();
    let resumed = batch_losses(&logged[restart_at..]);
    assert_eq!(resumed.len() as u64, steps - at);
    assert_eq!(resumed[..], reference[at as usize..]);
    assert_eq!(before[..], reference[..at as usize]);
    std::fs::remove_dir_all(&d).unwrap();
}

fn expect_error(args: &[String], exit: i32, code: &str, needle: &str) {
    let (status, events, stderr) = run(args);
    assert_eq!(status, exit, "{args:?}: {stderr}");
    let err = events
        .iter()
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("no error event for {args:?}: {stderr}"));
    assert_eq!(err["code"], code, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    // Never a silent fallback: no training happened.
    assert!(!events.iter().any(|e| e["type"] == "batch"), "{args:?}");
}

fn replace(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.into();
    args
}

#[test]
fn bad_inputs_give_clear_errors() {
    let d = tmp("bad");
    let data = token_file(&d, 6000);
    let args = base_args(&data, &d.join("run"), 4);

    // A missing model: no random weights.
    let mut m = replace(args.clone(), "--init", "tiny");
    let i = m.iter().position(|a| a == "--init").unwrap();
    m[i] = "--model".into();
    m[i + 1] = d.join("no-such-model").to_str().unwrap().into();
    expect_error(&m, 3, "model", "does not exist");
    // An unreadable model file.
    let junk = d.join("junk.bin");
    std::fs::write(&junk, b"not a model").unwrap();
    m[i + 1] = junk.to_str().unwrap().into();
    expect_error(&m, 3, "model", "junk.bin");

    let short = d.join("short.bin");
    std::fs::write(&short, [1u8, 0, 2, 0, 3, 0]).unwrap();
    expect_error(
        &replace(args.clone(), "--data", short.to_str().unwrap()),
        4,
        "data",
        "fewer than one window",
    );
    let big = d.join("big.bin");
    let mut b = std::fs::read(&data).unwrap();
    b[100] = 0xFF;
    b[101] = 0x7F;
    std::fs::write(&big, b).unwrap();
    expect_error(
        &replace(args.clone(), "--data", big.to_str().unwrap()),
        4,
        "data",
        "token id 32767 at position 50",
    );
    expect_error(
        &replace(args.clone(), "--data", d.join("nope.bin").to_str().unwrap()),
        4,
        "data",
        "nope.bin",
    );
    expect_error(
        &replace(args.clone(), "--lr", "NaN"),
        2,
        "invalid_argument",
        "--lr",
    );
    let mut lora = args.clone();
    lora.extend(["--lora-rank", "4", "--lora-targets", "q,qq"].map(String::from));
    expect_error(&lora, 2, "invalid_argument", "q, k, v, o, gate, up, down");
    expect_error(
        &replace(args.clone(), "--init", "gpt5"),
        2,
        "invalid_argument",
        "stories260k",
    );

    // A finished run, then resumes that must be refused.
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let mut again = args.clone();
    again.push("--resume".into());
    let mut lora_resume = again.clone();
    lora_resume.extend(["--lora-rank", "4"].map(String::from));
    expect_error(&lora_resume, 5, "checkpoint", "--lora-rank");
    expect_error(&args, 7, "exists", "--resume");
    // A damaged checkpoint.
    let w = d.join("run/checkpoints/step-000004/weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&w, bytes).unwrap();
    let mut more = replace(again.clone(), "--steps", "6");
    more.push("--no-progress".into());
    expect_error(&more, 5, "checkpoint", "damaged");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let d = tmp("nonfinite");
    let data = token_file(&d, 6000);
    let out = d.join("good");
    let (code, _, stderr) = run(&base_args(&data, &out, 2));
    assert_eq!(code, 0, "{stderr}");
    // A model whose final norm holds a NaN: every loss is NaN.
    let model = d.join("nan-model");
    std::fs::create_dir_all(&model).unwrap();
    for f in std::fs::read_dir(out.join("model")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), model.join(f.file_name())).unwrap();
    }
    let st = model.join("model.safetensors");
    let mut b = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let at = 8
        + n
        + header["model.norm.weight"]["data_offsets"][0]
            .as_u64()
            .unwrap() as usize;
    b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, b).unwrap();
    let mut args = base_args(&data, &d.join("nan-run"), 20);
    let i = args.iter().position(|a| a == "--init").unwrap();
    args[i] = "--model".into();
    args[i + 1] = model.to_str().unwrap().into();
    args.extend(["--max-bad-steps", "3"].map(String::from));
    let (code, events, stderr) = run(&args);
    assert_eq!(code, 6, "{stderr}");
    let skipped = events
        .iter()
        .filter(|e| e["type"] == "info" && e["key"] == "skipped_step")
        .count();
    assert_eq!(skipped, 3);
    assert!(!events.iter().any(|e| e["type"] == "checkpoint"));
    let err = events.last().unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "non_finite");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Spawns a run, waits for batch `after`, sends `signals` (e.g. ["-TERM"]) and returns the
/// exit status and the events.
fn signal_run(args: &[String], after: u64, signals: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for line in lines.by_ref() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let hit = e["type"] == "batch" && e["batch"] == after;
        events.push(e);
        if hit {
            break;
        }
    }
    let pid = child.id().to_string();
    for s in signals {
        Command::new("kill")
            .args([*s, pid.as_str()])
            .status()
            .unwrap();
    }
    for line in lines {
        match serde_json::from_str(&line.unwrap()) {
            Ok(e) => events.push(e),
            Err(_) => break, // a line cut short by the immediate exit
        }
    }
    (child.wait().unwrap().code(), events)
}

#[test]
fn sigterm_exits_143_and_a_second_signal_leaves_a_resumable_run() {
    let d = tmp("sigterm");
    let data = token_file(&d, 6000);
    let steps = 60;
    let args = replace(base_args(&data, &d.join("term"), steps), "--val-every", "0");
    let (code, events) = signal_run(&args, 3, &["-TERM"]);
    assert_eq!(code, Some(143));
    let done = events.last().unwrap();
    assert_eq!(
        (done["type"].as_str(), done["interrupted"].as_bool()),
        (Some("done"), Some(true))
    );

    // Two signals back to back: the second may end the process before its checkpoint is
    // written; either way the newest complete checkpoint must resume.
    let out = d.join("twice");
    let args = replace(base_args(&data, &out, steps), "--val-every", "0");
    let (code, _) = signal_run(&args, 5, &["-INT", "-INT"]);
    assert_eq!(code, Some(130));
    let mut r = args.clone();
    r.push("--resume".into());
    let (code, resumed, stderr) = run(&r);
    assert_eq!(code, 0, "{stderr}");
    assert!(resumed.iter().any(|e| e["type"] == "restart"));
    std::fs::remove_dir_all(&d).unwrap();
}
