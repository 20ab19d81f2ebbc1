//! `neuralforge data preview|info DIR`: look inside an ingested dataset.

use crate::output::Output;
use anyhow::Context;
use data::{Dataset, Split, Tokenizer};
use protocol::Event;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Decode the first documents; tokens that are not trained on are dimmed (marked in JSON).
    Preview(PreviewArgs),
    /// Documents, tokens and split sizes of a dataset.
    Info(InfoArgs),
}

#[derive(clap::Args)]
pub struct PreviewArgs {
    /// Dataset folder written by `neuralforge ingest`.
    pub dir: PathBuf,
    /// How many documents to show.
    #[arg(long, default_value_t = 5)]
    pub n: usize,
    /// Which split: train or val.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Tokenizer for decoding, if the one recorded in the manifest has moved (it must be the
    /// same tokenizer: the manifest's fingerprint is checked).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Decode with --tokenizer even when it is not the one the data was ingested with.
    #[arg(long)]
    pub allow_tokenizer_mismatch: bool,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Dataset folder written by `neuralforge ingest`.
    pub dir: PathBuf,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    match args.command {
        Command::Preview(a) => preview(a, out),
        Command::Info(a) => info(&a.dir, out),
    }
}

fn open(dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(dir).with_context(|| format!("opening dataset {}", dir.display()))
}

/// Runs of equally-masked tokens of one document: (trained, token ids).
fn runs(split: &Split, range: std::ops::Range<usize>) -> Vec<(bool, Vec<u32>)> {
    let mut out: Vec<(bool, Vec<u32>)> = Vec::new();
    for i in range {
        let trained = split.mask.as_ref().is_none_or(|m| m[i] != 0);
        match out.last_mut() {
            Some((t, ids)) if *t == trained => ids.push(split.tokens[i]),
            _ => out.push((trained, vec![split.tokens[i]])),
        }
    }
    out
}

fn preview(a: PreviewArgs, out: &Output) -> anyhow::Result<()> {
    let ds = open(&a.dir)?;
    let split = ds
        .split(&a.split)
        .with_context(|| format!("--split {}: expected train or val", a.split))?;
    let tok_path = a
        .tokenizer
        .clone()
        .unwrap_or_else(|| PathBuf::from(&ds.manifest.tokenizer.source));
    let tok = Tokenizer::from_path(&tok_path).with_context(|| {
        format!(
            "loading the dataset's tokenizer {} (pass --tokenizer if it moved)",
            tok_path.display()
        )
    })?;
    crate::inputs::check_dataset_tokenizer(&a.dir, Some(&tok), a.allow_tokenizer_mismatch)?;
    let color =
        !out.json && !crate::no_color() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    for (n, range) in split.documents().take(a.n).enumerate() {
        let tokens = range.len();
        let parts = runs(split, range);
        if out.json {
            let segments: Vec<serde_json::Value> = parts
                .iter()
                .map(|(t, ids)| serde_json::json!({"trained": t, "tokens": ids.len(), "text": tok.decode(ids)}))
                .collect();
            out.event(&Event::Info {
                key: "document".into(),
                value: serde_json::json!({"split": a.split, "index": n, "tokens": tokens, "segments": segments}),
            });
            continue;
        }
        println!("--- {} document {n} ({tokens} tokens) ---", a.split);
        let mut line = String::new();
        for (trained, ids) in &parts {
            let text = tok.decode(ids);
            match (trained, color) {
                (true, _) => line.push_str(&text),
                (false, true) => line.push_str(&format!("\x1b[2m{text}\x1b[0m")),
                (false, false) => line.push_str(&format!("[[{text}]]")),
            }
        }
        println!("{line}");
    }
    if !out.json && !color && split.mask.is_some() {
        println!("(text in [[ ]] is context only: not trained on)");
    }
    Ok(())
}

fn info(dir: &Path, out: &Output) -> anyhow::Result<()> {
    let ds = open(dir)?;
    let m = &ds.manifest;
    let split_json = |s: &Split| serde_json::json!({"documents": s.num_documents(), "tokens": s.len(), "trained_tokens": s.trained_tokens()});
    let value = serde_json::json!({
        "dir": dir.display().to_string(),
        "files": m.files.len(),
        "vocab_size": m.vocab_size,
        "dtype": m.dtype,
        "bos_id": m.bos_id,
        "eos_id": m.eos_id,
        "tokenizer": m.tokenizer.source,
        "masked": m.has_mask,
        "settings": m.settings,
        "skipped": m.skipped,
        "train": split_json(&ds.train),
        "val": split_json(&ds.val),
    });
    if out.json {
        out.event(&Event::Info {
            key: "dataset".into(),
            value,
        });
        return Ok(());
    }
    println!("dataset     {}", dir.display());
    println!("files       {}", m.files.len());
    println!(
        "tokenizer   {} (vocab {}, {:?})",
        m.tokenizer.source, m.vocab_size, m.dtype
    );
    for (name, s) in [("train", &ds.train), ("val", &ds.val)] {
        println!(
            "{name:<11} {} documents, {} tokens ({} trained)",
            s.num_documents(),
            s.len(),
            s.trained_tokens()
        );
    }
    println!("loss mask   {}", if m.has_mask { "yes" } else { "no" });
    Ok(())
}
