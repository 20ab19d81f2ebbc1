//! `neuralforge quickstart` end to end, shortened: corpus, tokenizer, training with a falling
//! loss, a saved model folder and a printed sample.

use serde_json::Value;
use std::process::Command;

#[test]
fn quickstart_trains_saves_and_samples() {
    let out = std::env::temp_dir().join(format!("nf-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args(["--json", "quickstart", "--steps", "60", "--stories", "300"])
        .args(["--sample-tokens", "30", "--threads", "1", "--out"])
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
    let losses: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "batch")
        .map(|e| e["avg_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 60);
    let first = losses[..5].iter().sum::<f64>() / 5.0;
    let last = losses[55..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 1.0, "loss {first} -> {last}");
    let sample = events
        .iter()
        .find(|e| e["type"] == "info" && e["key"] == "sample")
        .unwrap();
    let text = sample["value"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Once upon a time,") && text.len() > 20,
        "{text}"
    );
    assert!(stderr.contains("sample:"), "{stderr}");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join("run/model").join(f).is_file(), "{f}");
    }
    let corpus = std::fs::read_to_string(out.join("corpus.txt")).unwrap();
    assert_eq!(corpus.matches("<|endoftext|>").count(), 300);
    let _ = std::fs::remove_dir_all(&out);
}
