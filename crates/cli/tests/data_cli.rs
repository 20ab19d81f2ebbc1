//! `neuralforge tokenize | ingest | data | tokenizer` end to end (the binary, its NDJSON).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::shared;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nf-data-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary; returns (exit code, NDJSON events on stdout, stderr).
fn run(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args(args)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON {l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn tokenize_prints_ids_and_pieces() {
    let Some(shared) = shared() else { return };
    let tok = shared.join("data/stories260K/tok512.bin");
    let (code, ev, err) = run(&[
        "tokenize",
        "--json",
        "--model",
        p(&tok),
        "--text",
        "Once upon a time",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ev[0]["type"], "info");
    assert_eq!(
        ev[0]["value"]["ids"],
        serde_json::json!([1, 403, 407, 261, 378])
    );
    assert_eq!(ev[0]["value"]["pieces"][1], "▁Once");
    let (code, ev, _) = run(&[
        "tokenize",
        "--json",
        "--no-bos",
        "--model",
        p(&tok),
        "--text",
        "Once",
    ]);
    assert_eq!(code, 0);
    assert_eq!(ev[0]["value"]["ids"], serde_json::json!([403]));
    let (code, ev, err) = run(&[
        "tokenize",
        "--json",
        "--model",
        "/nonexistent/tok.bin",
        "--text",
        "x",
    ]);
    assert_ne!(code, 0);
    assert_eq!(ev.last().unwrap()["type"], "error");
    assert!(err.contains("/nonexistent/tok.bin"), "{err}");
}

#[test]
fn ingest_events_info_and_preview() {
    let Some(shared) = shared() else { return };
    let tok = shared.join("data/stories260K/tok512.bin");
    let root = temp_dir("ingest");
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("story.txt"),
        "Once upon a time there was a cat.\n<|endoftext|>\nThe end.\n",
    )
    .unwrap();
    std::fs::write(
        src.join("qa.jsonl"),
        "{\"prompt\":\"Who?\",\"completion\":\"A cat.\"}\n{\"prompt\":\"Where?\",\"completion\" 1}\n",
    )
    .unwrap();
    std::fs::write(src.join("bin.dat"), b"\0\x01\x02").unwrap();
    let out = root.join("ds");
    let (code, ev, err) = run(&[
        "ingest",
        "--json",
        p(&src),
        "--tokenizer",
        p(&tok),
        "--out",
        p(&out),
        "--val-split",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<&Value> = ev.iter().filter(|e| e["type"] == "ingest_file").collect();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|e| e["tokens"].as_u64().unwrap() > 0));
    let done = ev.iter().find(|e| e["type"] == "ingest_done").unwrap();
    assert_eq!(done["new_files"], 2);
    assert_eq!(done["skipped"], 1);
    assert_eq!(done["shards"], 1); // train; the empty val split has no shard
    assert!(done["manifest"]
        .as_str()
        .unwrap()
        .ends_with("manifest.json"));
    let warning = ev.iter().find(|e| e["key"] == "warning").unwrap();
    assert!(
        warning["value"].as_str().unwrap().contains("qa.jsonl:2"),
        "{warning}"
    );

    let (code, ev, err) = run(&["data", "info", "--json", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ev[0]["value"]["train"]["documents"], 3);
    assert_eq!(ev[0]["value"]["masked"], true);

    let (code, ev, err) = run(&["data", "preview", "--json", p(&out), "--n", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ev.len(), 3);
    let qa = ev
        .iter()
        .find(|e| e["value"]["segments"].as_array().unwrap().len() > 1)
        .unwrap();
    let segs = qa["value"]["segments"].as_array().unwrap();
    assert_eq!(segs[0]["trained"], false);
    assert_eq!(segs[0]["text"], "Who?\n");
    assert_eq!(segs[1]["trained"], true);
    assert_eq!(segs[1]["text"], "A cat.");

    // --strict: the malformed line is an error, with its line number.
    let (code, ev, err) = run(&[
        "ingest",
        "--json",
        "--strict",
        p(&src),
        "--tokenizer",
        p(&tok),
        "--out",
        p(&root.join("strict")),
    ]);
    assert_ne!(code, 0);
    assert_eq!(ev.last().unwrap()["type"], "error");
    assert!(err.contains("qa.jsonl:2"), "{err}");
}

#[test]
fn tokenizer_train_writes_a_usable_tokenizer() {
    let Some(shared) = shared() else { return };
    let root = temp_dir("train-tok");
    let corpus = root.join("corpus.txt");
    let text =
        std::fs::read_to_string(shared.join("data/tinystories/TinyStories-validation.head.txt"))
            .unwrap();
    std::fs::write(&corpus, &text[..200_000]).unwrap();
    let out = root.join("tok/tokenizer.json");
    let (code, _, err) = run(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "600",
        "--out",
        p(&out),
        p(&corpus),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(root.join("tok/tokenizer_config.json").is_file());
    let (code, ev, err) = run(&[
        "tokenize",
        "--json",
        "--model",
        p(&root.join("tok")),
        "--text",
        "Spot saw the car.",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = &ev[0]["value"];
    assert_eq!(v["vocab_size"], 600);
    assert_eq!(v["bos_id"], 1);
    assert_eq!(v["eos_id"], 2);
    assert!(v["count"].as_u64().unwrap() < 10, "{v}");
}
