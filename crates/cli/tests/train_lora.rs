//! LoRA through `neuralforge train` on a real small model (llama2.c stories260K) and real SFT
//! text: the validation loss falls and a PEFT adapter folder comes out.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn shared() -> Option<PathBuf> {
    let p = std::env::var("NEURALFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    p.is_dir().then_some(p)
}

#[test]
fn lora_lowers_validation_loss_on_sft_data() {
    let Some(sh) = shared() else {
        println!("skipped: shared data not found");
        return;
    };
    let out = std::env::temp_dir().join(format!("nf-train-lora-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let s = |p: &str| sh.join(p).to_str().unwrap().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args(["--json", "train", "--model"])
        .arg(s("data/stories260K/stories260K.bin"))
        .arg("--tokenizer")
        .arg(s("data/stories260K/tok512.bin"))
        .arg("--data")
        .arg(s("data/sft/mlx_lora_wikisql_text_train.jsonl"))
        .arg("--val-data")
        .arg(s("data/sft/mlx_lora_wikisql_text_valid.jsonl"))
        .args([
            "--lora-rank",
            "8",
            "--lora-targets",
            "q,k,v,o,gate,up,down",
            "--steps",
            "40",
            "--batch-size",
            "8",
            "--seq-len",
            "128",
            "--lr",
            "1e-2",
            "--warmup",
            "4",
            "--val-every",
            "40",
            "--val-batches",
            "4",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let events: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let init = events.iter().find(|e| e["type"] == "init").unwrap();
    assert_eq!(init["mode"], "lora");
    assert!(init["trainable_params"].as_u64().unwrap() < init["params"].as_u64().unwrap() / 2);
    assert!(events
        .iter()
        .any(|e| e["type"] == "info" && e["key"] == "lora"));
    let vals: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "val")
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(vals.len(), 2, "{vals:?}");
    assert!(
        vals[1] < vals[0] - 0.3,
        "val loss {} -> {}",
        vals[0],
        vals[1]
    );
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(out.join("adapter").join(f).is_file(), "{f}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A LoRA checkpoint records its base's SHA-256: resuming on the same bytes continues,
/// resuming after the file at that path changed stops with a checkpoint error that names it,
/// instead of training the adapter on another model.
#[test]
fn resume_refuses_a_changed_base_model() {
    let Some(sh) = shared() else {
        println!("skipped: shared data not found");
        return;
    };
    let dir = std::env::temp_dir().join(format!("nf-lora-base-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.bin");
    std::fs::copy(sh.join("data/stories260K/stories260K.bin"), &base).unwrap();
    let run = |model: &std::path::Path, steps: &str, resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_neuralforge"));
        c.args(["--json", "train", "--model"])
            .arg(model)
            .arg("--tokenizer")
            .arg(sh.join("data/stories260K/tok512.bin"))
            .arg("--data")
            .arg(sh.join("data/sft/mlx_lora_wikisql_text_train.jsonl"))
            .args(["--lora-rank", "4", "--steps", steps, "--batch-size", "2"])
            .args([
                "--seq-len",
                "32",
                "--ckpt-every",
                "1",
                "--threads",
                "2",
                "--out",
            ])
            .arg(dir.join("run"));
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let first = run(&base, "2", false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let same = run(&base, "3", true);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    // One low mantissa byte of the last weight: still a valid model, another base.
    let mut bytes = std::fs::read(&base).unwrap();
    let last = bytes.len() - 4;
    bytes[last] ^= 1;
    std::fs::write(&base, &bytes).unwrap();
    let changed = run(&base, "4", true);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert_eq!(changed.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("base.bin") && stderr.contains("changed since the checkpoint"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The adapter folder a LoRA run writes records its base's SHA-256 (`neuralforge_base.json`).
/// Run from the record (`generate --model RUN`, either path) on a base whose bytes changed, it
/// stops with a model error naming both; given the base explicitly (`--model BASE --adapter`,
/// `export BASE --merge`) it runs, with a warning that the base differs.
#[test]
fn an_adapter_runs_from_its_record_only_on_the_base_it_was_trained_on() {
    let Some(sh) = shared() else {
        println!("skipped: shared data not found");
        return;
    };
    let dir = std::env::temp_dir().join(format!("nf-lora-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nf = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let p = |p: &std::path::Path| p.as_os_str().to_owned();
    let s = |s: &str| std::ffi::OsString::from(s);
    std::fs::copy(
        sh.join("data/stories260K/tok512.bin"),
        dir.join("tokenizer.bin"),
    )
    .unwrap();
    std::fs::copy(
        sh.join("data/stories260K/stories260K.bin"),
        dir.join("base.bin"),
    )
    .unwrap();
    // An F32 GGUF base: generate keeps it in its blocks and runs the adapter unmerged.
    let base = dir.join("base.gguf");
    let (code, _, err) = nf(&[
        &s("export"),
        &p(&dir.join("base.bin")),
        &s("--format"),
        &s("gguf"),
        &s("--dtype"),
        &s("f32"),
        &s("--out"),
        &p(&base),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let run = dir.join("run");
    let (code, _, err) = nf(&[
        &s("train"),
        &s("--model"),
        &p(&base),
        &s("--data"),
        &p(&sh.join("data/sft/mlx_lora_wikisql_text_train.jsonl")),
        &s("--lora-rank"),
        &s("4"),
        &s("--steps"),
        &s("2"),
        &s("--batch-size"),
        &s("2"),
        &s("--seq-len"),
        &s("32"),
        &s("--threads"),
        &s("2"),
        &s("--out"),
        &p(&run),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("adapter/neuralforge_base.json")).unwrap(),
    )
    .unwrap();
    let sha = record["base_sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    let generate = |model: &std::path::Path, extra: &[&str]| {
        let mut args = vec![s("generate"), s("--model"), p(model)];
        args.extend(extra.iter().map(|a| s(a)));
        args.extend(["--prompt", "Once", "--max-tokens", "8", "--temp", "0"].map(s));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        nf(&refs)
    };
    let (code, trained_text, err) = generate(&run, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");

    // One low mantissa byte of the last weight: still a valid model, another base.
    let mut bytes = std::fs::read(&base).unwrap();
    let last = bytes.len() - 4;
    bytes[last] ^= 1;
    std::fs::write(&base, &bytes).unwrap();
    for extra in [&[][..], &["--dequantize"][..]] {
        let (code, out, err) = generate(&run, extra);
        assert_eq!(code, Some(3), "{extra:?}: {err}");
        assert!(out.is_empty(), "{extra:?}: {out}");
        assert!(
            err.contains(&sha[..12]) && err.contains("base.gguf") && err.contains("changed"),
            "{extra:?}: {err}"
        );
    }
    let adapter = run.join("adapter");
    let (code, text, err) = generate(&base, &["--adapter", adapter.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning") && err.contains(&sha[..12]), "{err}");
    assert!(!text.is_empty() && !trained_text.is_empty());
    let (code, _, err) = nf(&[
        &s("export"),
        &p(&base),
        &s("--merge"),
        &p(&adapter),
        &s("--format"),
        &s("gguf"),
        &s("--dtype"),
        &s("f32"),
        &s("--out"),
        &p(&dir.join("merged.gguf")),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning") && err.contains(&sha[..12]), "{err}");

    // Back to the trained bytes: the record matches again.
    bytes[last] ^= 1;
    std::fs::write(&base, &bytes).unwrap();
    let (code, again, err) = generate(&run, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again, trained_text);
    let _ = std::fs::remove_dir_all(&dir);
}
