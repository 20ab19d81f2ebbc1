//! Ingest throughput against the `tokenizers` crate's raw batch encoding of the same documents,
//! both on a 2-thread pool, in one run. Ignored by default (a measurement, not a check):
//!   cargo test -p data --test bench_ingest -- --ignored --nocapture
//! Numbers go to docs/performance-ingest.md.

mod common;

use data::ingest::extract::{text_documents, Document};
use data::ingest::{ingest, IngestOptions};
use data::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

const ROUNDS: usize = 3;

fn measure(name: &str, tok: &Tokenizer, files: &[PathBuf], bytes: usize, pool: &rayon::ThreadPool) {
    let docs: Vec<String> = files
        .iter()
        .flat_map(|f| text_documents("text", &std::fs::read_to_string(f).unwrap()))
        .map(|d| match d {
            Document::Text(t) => t,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let raw = tok.hf_tokenizer().expect("a tokenizers-backed tokenizer");
    let out = common::temp_dir(&format!("bench-{name}"));
    let mut best_raw = f64::MAX;
    let mut best_ingest = f64::MAX;
    let mut raw_tokens = 0;
    let mut ingest_tokens = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let enc = pool.install(|| raw.encode_batch_fast(docs.clone(), false).unwrap());
        best_raw = best_raw.min(t.elapsed().as_secs_f64());
        raw_tokens = enc.iter().map(|e| e.len()).sum::<usize>();

        let mut o = IngestOptions::new(files.to_vec(), out.clone());
        o.val_split = 0.05;
        let t = Instant::now();
        let r = pool.install(|| ingest(tok, &o, &|_| {}).unwrap());
        best_ingest = best_ingest.min(t.elapsed().as_secs_f64());
        ingest_tokens = r.total_tokens;
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "{name}: {mb:.2} MB, {} docs | raw encode_batch_fast: {:.3}s = {:.2} MB/s ({raw_tokens} tokens) | ingest: {:.3}s = {:.2} MB/s ({ingest_tokens} tokens incl. EOS) | ingest/raw time = {:.2}x",
        docs.len(),
        best_raw,
        mb / best_raw,
        best_ingest,
        mb / best_ingest,
        best_ingest / best_raw
    );
}

#[test]
#[ignore]
fn ingest_throughput_vs_raw_tokenizers() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = shared.join("data/tinystories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bytes: usize = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len() as usize)
        .sum();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    if let Some(gguf) = common::smollm_gguf() {
        let tok = Tokenizer::from_path(&gguf).unwrap();
        measure("smollm2 byte-level BPE", &tok, &files, bytes, &pool);
    }
    // The Llama 2 SentencePiece model runs on our own merge loop inside ingest; the raw
    // baseline is `tokenizers` on its tokenizer.json export (same ids).
    let spm = Tokenizer::from_path(&shared.join("data/llama2_tokenizer/tokenizer.bin")).unwrap();
    let json_dir = common::temp_dir("bench-llama2-json");
    spm.save(&json_dir).unwrap();
    let hf = Tokenizer::from_path(&json_dir.join("tokenizer.json")).unwrap();
    let docs_spm = {
        let out = common::temp_dir("bench-llama2-spm");
        let mut o = IngestOptions::new(files.clone(), out);
        o.val_split = 0.05;
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            pool.install(|| ingest(&spm, &o, &|_| {}).unwrap());
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    println!(
        "llama2 sentencepiece (own merge loop) ingest: {:.3}s = {:.2} MB/s",
        docs_spm,
        bytes as f64 / 1e6 / docs_spm
    );
    measure("llama2 tokenizer.json export", &hf, &files, bytes, &pool);
}
