//! `train --precision bf16` end to end on the tiny preset: it learns like f32, records its
//! precision, resumes exactly after `kill -9`, warns when a resume changes the precision,
//! and is refused with a clear error where the CPU lacks AVX-512 BF16.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_neuralforge");

/// Largest per-step difference allowed between the f32 and bf16 losses of the same run
/// (about 6 nats at the start, 1 at the end; BF16 operands move them by a few 2⁻⁹).
const LOSS_BOUND: f64 = 0.05;

fn args(data: &Path, out: &Path, steps: u64, precision: &str) -> Vec<String> {
    let steps = steps.to_string();
    [
        "--json",
        "train",
        "--init",
        "tiny",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        &steps,
        "--batch-size",
        "4",
        "--seq-len",
        "64",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--val-split",
        "0.1",
        "--val-every",
        "10",
        "--val-batches",
        "2",
        "--ckpt-every",
        "3",
        "--threads",
        "2",
        "--precision",
        precision,
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> (i32, Vec<Value>, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    let events = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        o.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// (step, loss) of every step event.
fn losses(events: &[Value]) -> Vec<(u64, f64)> {
    events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

/// Whether this CPU has AVX-512 BF16; where it does not, checks that bf16 is refused with
/// an error naming the flag, and that auto falls back to f32.
fn bf16_or_refused(data: &Path, dir: &Path) -> bool {
    let has = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" avx512_bf16"))
        .unwrap_or(false);
    if has {
        return true;
    }
    let (code, events, stderr) = run(&args(data, &dir.join("refused"), 2, "bf16"));
    assert_eq!(code, 2, "{stderr}");
    let err = events.iter().find(|e| e["type"] == "error").unwrap();
    assert!(err["message"].as_str().unwrap().contains("--precision"));
    let (code, events, stderr) = run(&args(data, &dir.join("auto"), 2, "auto"));
    assert_eq!(code, 0, "{stderr}");
    let init = events.iter().find(|e| e["type"] == "init").unwrap();
    assert_eq!(init["precision"], "f32");
    println!("skipped: this CPU has no AVX-512 BF16");
    false
}

#[test]
fn bf16_training_learns_like_f32_and_records_its_precision() {
    let d = common::tmp("bf16", "learns");
    let data = common::counter_tokens(&d, 8000, 4242, 7, 97);
    if !bf16_or_refused(&data, &d) {
        return;
    }
    let steps = 30;
    let (code, f32_run, stderr) = run(&args(&data, &d.join("f32"), steps, "f32"));
    assert_eq!(code, 0, "{stderr}");
    let (code, bf16_run, stderr) = run(&args(&data, &d.join("bf16"), steps, "bf16"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("precision: bf16"), "{stderr}");

    let init = bf16_run.iter().find(|e| e["type"] == "init").unwrap();
    assert_eq!(init["precision"], "bf16");
    let (a, b) = (losses(&f32_run), losses(&bf16_run));
    assert_eq!(a.len(), steps as usize);
    assert_eq!(b.len(), steps as usize);
    let worst = a
        .iter()
        .zip(&b)
        .map(|((_, x), (_, y))| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < LOSS_BOUND, "bf16 losses differ from f32 by {worst}");
    assert!(
        worst > 0.0,
        "bf16 gave exactly the f32 losses: it did not run"
    );
    // It learns the counter: the loss falls by more than 2 nats (6.2 to about 3.1).
    assert!(b[steps as usize - 1].1 < b[0].1 - 2.0, "{b:?}");

    // The run folder says what ran: the config keeps the request, the checkpoint the result.
    let config = std::fs::read_to_string(d.join("bf16/config.toml")).unwrap();
    assert!(config.contains("precision = \"bf16\""), "{config}");
    let ckpts = d.join("bf16/checkpoints");
    let last = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["state"]["precision"], "bf16", "{state}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bf16_resume_after_kill_9_repeats_the_exact_losses() {
    let d = common::tmp("bf16", "kill9");
    let data = common::counter_tokens(&d, 8000, 777, 5, 89);
    if !bf16_or_refused(&data, &d) {
        return;
    }
    let steps = 12;
    let (code, reference, stderr) = run(&args(&data, &d.join("ref"), steps, "bf16"));
    assert_eq!(code, 0, "{stderr}");
    let reference = losses(&reference);

    let out = d.join("killed");
    let mut child = Command::new(BIN)
        .args(args(&data, &out, steps, "bf16"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut before = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let at_7 = e["type"] == "step" && e["step"] == 7;
        before.push(e);
        if at_7 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, between checkpoints
    child.wait().unwrap();
    // Same seed, data and threads: the same bf16 losses, bit for bit.
    let got = losses(&before);
    assert_eq!(got[..], reference[..got.len()]);

    let mut resume = args(&data, &out, steps, "bf16");
    resume.push("--resume".into());
    let (code, resumed, stderr) = run(&resume);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let from = resumed.iter().find(|e| e["type"] == "restart").unwrap()["step"]
        .as_u64()
        .unwrap();
    assert!((3..=6).contains(&from), "restarted at {from}");
    assert_eq!(losses(&resumed)[..], reference[from as usize..]);

    // Continuing in another precision is allowed, and said to break the exact repeat.
    let mut longer = args(&data, &out, steps + 2, "f32");
    longer.push("--resume".into());
    let (code, _, stderr) = run(&longer);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the checkpoint's steps ran in bf16 products, these run in f32"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_bad_precision_is_refused_naming_the_flag_or_field() {
    let d = common::tmp("bf16", "bad");
    let data = common::counter_tokens(&d, 2000, 1, 3, 50);
    let (code, _, stderr) = run(&args(&data, &d.join("a"), 2, "fp16"));
    assert_eq!(code, 2);
    assert!(stderr.contains("--precision"), "{stderr}");
    let toml = d.join("c.toml");
    std::fs::write(&toml, "precision = \"half\"\n").unwrap();
    let mut a = args(&data, &d.join("b"), 2, "f32");
    let at = a.iter().position(|s| s == "--precision").unwrap();
    a.drain(at..at + 2);
    a.extend(["--config".into(), toml.to_str().unwrap().into()]);
    let (code, _, stderr) = run(&a);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("precision") && stderr.contains("half"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
