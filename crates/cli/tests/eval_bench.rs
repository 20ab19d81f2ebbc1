//! `neuralforge eval` and `neuralforge bench` end to end.

use std::path::{Path, PathBuf};

mod common;
use common::{nf, shared};

fn tmp(name: &str) -> PathBuf {
    common::tmp("cli-evalbench", name)
}

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = nf(args);
    assert!(ok, "{args:?} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

/// The int32 `tokens` tensor of a fixture's batch.safetensors, as rows of T+1 ids.
fn fixture_rows(dir: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(dir.join("batch.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["tokens"];
    assert_eq!(t["dtype"], "I32");
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let start = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    let ids: Vec<u32> = bytes[start..start + shape[0] * shape[1] * 4]
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    ids.chunks(shape[1]).map(|r| r.to_vec()).collect()
}

fn write_tokens(path: &Path, ids: &[u32], wide: bool) {
    let bytes: Vec<u8> = if wide {
        ids.iter().flat_map(|t| t.to_le_bytes()).collect()
    } else {
        ids.iter().flat_map(|t| (*t as u16).to_le_bytes()).collect()
    };
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn eval_reproduces_the_pytorch_loss_of_the_fixture() {
    let Some(sh) = shared() else { return };
    let fx = sh.join("fixtures/tiny-llama");
    let model = fx.join("model");
    let model = model.to_str().unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("expected.json")).unwrap()).unwrap();
    let want = expected["initial"]["loss"].as_f64().unwrap();
    let rows = fixture_rows(&fx);
    let seq = (rows[0].len() - 1).to_string();
    let d = tmp("fixture");
    let mut losses = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let f16 = d.join(format!("row{i}.u16"));
        let f32_ = d.join(format!("row{i}.u32"));
        write_tokens(&f16, row, false);
        write_tokens(&f32_, row, true);
        let a = json(&[
            "eval",
            "--json",
            "--model",
            model,
            "--tokens",
            f16.to_str().unwrap(),
            "--seq-len",
            &seq,
            "--threads",
            "2",
        ]);
        let b = json(&[
            "eval",
            "--json",
            "--model",
            model,
            "--tokens",
            f32_.to_str().unwrap(),
            "--seq-len",
            &seq,
            "--u32",
        ]);
        assert_eq!(a["loss"], b["loss"]);
        assert_eq!(a["windows"], 1);
        assert_eq!(a["tokens"].as_u64().unwrap() as usize, row.len() - 1);
        let l = a["loss"].as_f64().unwrap();
        assert!((a["perplexity"].as_f64().unwrap() - l.exp()).abs() < 1e-9 * l.exp());
        losses.push(l);
    }
    // The fixture's loss is the mean over both rows (equal token counts).
    let mean = losses.iter().sum::<f64>() / losses.len() as f64;
    assert!((mean - want).abs() < 1e-4, "{mean} vs {want}");

    // Windows of T+1 at multiples of T; batching does not change the result; --max-windows cuts.
    let all: Vec<u32> = rows.concat();
    let f = d.join("all.u16");
    write_tokens(&f, &all, false);
    let f = f.to_str().unwrap();
    let one = json(&[
        "eval",
        "--json",
        "--model",
        model,
        "--tokens",
        f,
        "--seq-len",
        "8",
    ]);
    let three = json(&[
        "eval",
        "--json",
        "--model",
        model,
        "--tokens",
        f,
        "--seq-len",
        "8",
        "--batch-size",
        "3",
    ]);
    assert_eq!(
        one["windows"].as_u64().unwrap() as usize,
        (all.len() - 1) / 8
    );
    assert!((one["loss"].as_f64().unwrap() - three["loss"].as_f64().unwrap()).abs() < 1e-5);
    let cut = json(&[
        "eval",
        "--json",
        "--model",
        model,
        "--tokens",
        f,
        "--seq-len",
        "8",
        "--max-windows",
        "2",
    ]);
    assert_eq!(cut["windows"], 2);
    assert_eq!(cut["tokens"], 16);
}

#[test]
fn eval_rejects_bad_token_files() {
    let Some(sh) = shared() else { return };
    let model = sh.join("fixtures/tiny-llama/model");
    let d = tmp("bad");
    std::fs::write(d.join("odd.bin"), [1u8, 0, 2]).unwrap();
    write_tokens(&d.join("big.bin"), &[1, 2, 600, 3], false);
    write_tokens(&d.join("short.bin"), &[1, 2, 3], false);
    // (file, --seq-len, what the error must say)
    let cases: [(&str, &str, &[&str]); 4] = [
        ("odd.bin", "1", &["odd.bin", "whole number of u16"]),
        ("big.bin", "2", &["600", "vocabulary"]),
        ("short.bin", "8", &["not enough"]),
        ("missing", "8", &["missing"]),
    ];
    for (file, seq_len, says) in cases {
        let tokens = d.join(file);
        let (ok, _, err) = nf(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--seq-len",
            seq_len,
        ]);
        assert!(!ok && says.iter().all(|s| err.contains(s)), "{file}: {err}");
    }
}

#[test]
fn bench_reports_throughput_mfu_and_memory() {
    for mode in ["full", "lora"] {
        let r = json(&[
            "bench",
            "--json",
            "--preset",
            "tiny",
            "--mode",
            mode,
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--steps",
            "1",
            "--threads",
            "2",
            "--lora-rank",
            "4",
        ]);
        let peak = r["gemm_gflops"]["peak"].as_f64().unwrap();
        assert!(peak > 0.0);
        for phase in ["forward", "forward_backward", "step"] {
            let mfu = r[phase]["mfu"].as_f64().unwrap();
            assert!(mfu > 0.0 && mfu < 1.5, "{phase} mfu {mfu}");
            assert!(r[phase]["tokens_per_s"].as_f64().unwrap() > 0.0);
        }
        let m = &r["memory_bytes"];
        assert!(m["weights"].as_u64().unwrap() > 0 && m["activations"].as_u64().unwrap() > 0);
        assert!(m["peak_rss"].as_u64().unwrap() >= m["weights"].as_u64().unwrap());
        // The breakdown (model memory plus the process baseline measured before the model
        // existed) explains the peak resident set.
        let (total, rss) = (
            m["breakdown_total"].as_f64().unwrap(),
            m["peak_rss"].as_f64().unwrap(),
        );
        assert!(m["process_baseline"].as_u64().unwrap() > 0);
        assert!(
            rss < 1.3 * total && rss > 0.7 * total,
            "peak RSS {rss} vs {total}"
        );
        let cfg_p = r["matmul_params"].as_f64().unwrap();
        let per_token = if mode == "full" {
            6.0 * cfg_p
        } else {
            4.0 * cfg_p
        } + 6.0 * 2.0 * 32.0 * 64.0;
        assert!((r["flops_per_token"].as_f64().unwrap() - per_token).abs() < 1.0);
    }
    let (ok, _, err) = nf(&["bench", "--preset", "nope"]);
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = nf(&["bench", "--preset", "tiny", "--mode", "half"]);
    assert!(!ok && err.contains("--mode"), "{err}");
}
