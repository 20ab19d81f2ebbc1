//! QLoRA through the CLI on a tiny model and generated tokens: a LoRA run on a Q8_0 / Q4_1
//! GGUF base keeps the base quantized and gives exactly the per-step losses of a run on the
//! same base exported to f32; it resumes exactly; the adapter merges back into f32 and
//! re-quantized files. The real-model measurement (SmolLM2 Q4_1) is in docs/qlora.md.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::{nf, tmp};

/// The tests' token file: a noisy counter, ids below 512.
fn token_file(dir: &Path, n: usize) -> PathBuf {
    common::counter_tokens(dir, n, 99, 5, 89)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = nf(args);
    assert!(success, "{args:?}: {stderr}");
    stdout
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Exact JSON text of every batch event's loss, and the val losses.
fn losses(ev: &[Value]) -> (Vec<String>, Vec<f64>) {
    let batch = ev
        .iter()
        .filter(|e| e["type"] == "batch")
        .map(|e| e["avg_loss"].to_string())
        .collect();
    let val = ev
        .iter()
        .filter(|e| e["type"] == "val")
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    (batch, val)
}

fn lora_info(ev: &[Value]) -> Value {
    ev.iter()
        .find(|e| e["type"] == "info" && e["key"] == "lora")
        .map(|e| e["value"].clone())
        .expect("lora info event")
}

fn lora_run(model: &Path, data: &Path, out: &Path, steps: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "--json",
        "train",
        "--model",
        s(model),
        "--data",
        s(data),
        "--lora-rank",
        "4",
        "--lora-targets",
        "q,k,v,o,gate,up,down",
        "--lora-dropout",
        "0.1",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--lr",
        "1e-2",
        "--warmup",
        "2",
        "--schedule",
        "constant",
        "--val-split",
        "0.1",
        "--val-every",
        "5",
        "--val-batches",
        "2",
        "--ckpt-every",
        "5",
        "--threads",
        "2",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    events(&ok(&args))
}

#[test]
fn qlora_matches_the_dequantized_f32_base_and_resumes_exactly() {
    let d = tmp("qlora", "equal");
    let data = token_file(&d, 8000);
    // A small trained model to start from, exported as quantized GGUF files.
    ok(&[
        "train",
        "--init",
        "tiny",
        "--data",
        s(&data),
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--lr",
        "3e-3",
        "--threads",
        "2",
        "--out",
        s(&d.join("pre")),
    ]);
    let model = d.join("pre/model");
    for dtype in ["q8_0", "q4_1"] {
        let q = d.join(format!("{dtype}.gguf"));
        let f = d.join(format!("{dtype}-f32.gguf"));
        ok(&[
            "export",
            s(&model),
            "--format",
            "gguf",
            "--dtype",
            dtype,
            "--out",
            s(&q),
        ]);
        // The quantized file dequantized: the f32 base the QLoRA run must equal.
        ok(&[
            "export",
            s(&q),
            "--format",
            "gguf",
            "--dtype",
            "f32",
            "--out",
            s(&f),
        ]);
        let run_q = lora_run(&q, &data, &d.join(format!("{dtype}-run")), "10", &[]);
        let run_f = lora_run(&f, &data, &d.join(format!("{dtype}-f32-run")), "10", &[]);
        let (info_q, info_f) = (lora_info(&run_q), lora_info(&run_f));
        assert_eq!(info_q["base_quantized"], true, "{info_q}");
        assert_eq!(info_f["base_quantized"], false, "{info_f}");
        assert!(
            info_q["base_bytes"].as_u64().unwrap() * 2 < info_f["base_bytes"].as_u64().unwrap(),
            "{info_q} {info_f}"
        );
        let (lq, vq) = losses(&run_q);
        let (lf, vf) = losses(&run_f);
        assert_eq!(lq.len(), 10);
        assert_eq!(
            lq, lf,
            "{dtype}: per-step losses of the quantized and f32 bases"
        );
        assert_eq!(vq, vf, "{dtype}: validation losses");
        assert!(vq[vq.len() - 1] < vq[0], "{dtype}: val loss {vq:?}");
        // --base-dtype f32 expands the quantized file at load: the same numbers again.
        let run_x = lora_run(
            &q,
            &data,
            &d.join(format!("{dtype}-x-run")),
            "10",
            &["--base-dtype", "f32"],
        );
        assert_eq!(lora_info(&run_x)["base_quantized"], false);
        assert_eq!(losses(&run_x).0, lf, "{dtype}: --base-dtype f32");
    }

    // Exact resume: 5 steps, then on to 10 from the checkpoint (the base re-read from the
    // file) repeats the uninterrupted run's steps 6..10.
    let q = d.join("q4_1.gguf");
    let out = d.join("resumed");
    let first = lora_run(&q, &data, &out, "5", &[]);
    let full = losses(&lora_run(&q, &data, &d.join("q4_1-run2"), "10", &[])).0;
    assert_eq!(losses(&first).0[..], full[..5]);
    let again = lora_run(&q, &data, &out, "10", &["--resume"]);
    assert!(again.iter().any(|e| e["type"] == "restart"));
    assert_eq!(losses(&again).0[..], full[5..], "resumed QLoRA losses");
    // The base's storage is part of what a resume must keep.
    let (success, _, stderr) = nf(&[
        "train",
        "--resume",
        s(&out),
        "--steps",
        "12",
        "--base-dtype",
        "f32",
    ]);
    assert!(!success && stderr.contains("--base-dtype"), "{stderr}");

    // The adapter merges into the (dequantized) base: f32 and re-quantized files.
    let adapter = out.join("adapter");
    for dtype in ["f32", "q4_1"] {
        let merged = d.join(format!("merged-{dtype}.gguf"));
        ok(&[
            "export",
            s(&q),
            "--merge",
            s(&adapter),
            "--format",
            "gguf",
            "--dtype",
            dtype,
            "--out",
            s(&merged),
        ]);
        let info = ok(&["--json", "info", s(&merged)]);
        assert!(!info.is_empty());
    }

    // Evaluating the run: its adapter runs unmerged on the Q4_1 blocks (the default path),
    // whether named by the run folder or given as --adapter, and scores what the merged f32
    // file scores, up to the 16-bit activation rounding of the Q4_1 products.
    let eval = |model: &Path, extra: &[&str]| -> f64 {
        let mut args = vec!["--json", "eval", "--model", s(model), "--data", s(&data)];
        args.extend_from_slice(&["--seq-len", "32", "--max-windows", "24", "--threads", "2"]);
        args.extend_from_slice(extra);
        let stdout = ok(&args);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.contains("\"loss\""))
            .unwrap();
        serde_json::from_str::<Value>(line).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let run = eval(&out, &[]);
    let explicit = eval(&q, &["--adapter", s(&adapter)]);
    let merged = eval(&d.join("merged-f32.gguf"), &[]);
    let dequantized = eval(&out, &["--dequantize"]);
    let base = eval(&q, &[]);
    assert_eq!(run, explicit, "run folder and --adapter");
    assert!(
        (run - merged).abs() < 1e-4,
        "unmerged {run} vs merged {merged}"
    );
    assert!(
        (dequantized - merged).abs() < 1e-5,
        "{dequantized} vs {merged}"
    );
    assert!(
        (run - base).abs() > 10.0 * (run - merged).abs(),
        "the adapter must matter: {run} vs base {base} (merged {merged})"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn base_dtype_is_a_lora_option_and_bf16_trains() {
    let d = tmp("qlora", "bf16");
    let data = token_file(&d, 6000);
    ok(&[
        "train",
        "--init",
        "tiny",
        "--data",
        s(&data),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--threads",
        "2",
        "--out",
        s(&d.join("pre")),
    ]);
    let q = d.join("q8.gguf");
    ok(&[
        "export",
        s(&d.join("pre/model")),
        "--format",
        "gguf",
        "--dtype",
        "q8_0",
        "--out",
        s(&q),
    ]);
    let (success, _, stderr) = nf(&[
        "train",
        "--model",
        s(&q),
        "--data",
        s(&data),
        "--base-dtype",
        "keep",
        "--out",
        s(&d.join("x")),
    ]);
    assert!(
        !success && stderr.contains("--base-dtype") && stderr.contains("--lora-rank"),
        "{stderr}"
    );
    let ev = lora_run(&q, &data, &d.join("bf16"), "6", &["--base-dtype", "bf16"]);
    let info = lora_info(&ev);
    assert_eq!(info["base_dtype"], "bf16");
    assert_eq!(info["base_quantized"], true);
    let (l, v) = losses(&ev);
    assert_eq!(l.len(), 6);
    assert!(v[v.len() - 1] < v[0], "val loss {v:?}");
    std::fs::remove_dir_all(&d).unwrap();
}
