//! `neuralforge ingest`: text, folders and JSONL into token shards + manifest.json.

use crate::output::Output;
use anyhow::Context;
use data::ingest::{ingest, FileEvent, IngestOptions};
use protocol::Event;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Files and folders (walked recursively; hidden entries are skipped).
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Model folder, tokenizer.json, tokenizer.bin or .gguf whose tokenizer to use.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of documents held out for validation.
    #[arg(long, default_value_t = 0.05)]
    pub val_split: f64,
    /// Seed of the train/validation assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Reuse the tokens of files whose content did not change since the last run.
    #[arg(long)]
    pub incremental: bool,
    /// Treat warnings (malformed lines, invalid UTF-8, unsupported files) as errors.
    #[arg(long)]
    pub strict: bool,
    /// Train on prompt and user tokens too (no loss mask).
    #[arg(long)]
    pub train_on_prompt: bool,
    /// Write into an --out folder that exists but is not a dataset (its dataset files are
    /// replaced; other files stay).
    #[arg(long)]
    pub force: bool,
    /// Tokens per shard file.
    #[arg(long, default_value_t = 1 << 27, hide = true)]
    pub shard_tokens: u64,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    // A dataset folder is re-ingested in place (that is what --incremental is for); any other
    // non-empty folder is the user's and is refused.
    if !args.out.join(data::manifest::MANIFEST_FILE).is_file() {
        crate::overwrite::refuse_existing_dir(&args.out, args.force, "--out")?;
    }
    let tok = data::Tokenizer::from_path(&args.tokenizer)
        .with_context(|| format!("loading the tokenizer {}", args.tokenizer.display()))?;
    let mut opts = IngestOptions::new(args.sources.clone(), args.out.clone());
    // An absolute path, so `data preview` finds the tokenizer from any folder.
    opts.tokenizer_source = std::fs::canonicalize(&args.tokenizer)
        .unwrap_or_else(|_| args.tokenizer.clone())
        .display()
        .to_string();
    opts.val_split = args.val_split;
    opts.seed = args.seed;
    opts.incremental = args.incremental;
    opts.strict = args.strict;
    opts.train_on_prompt = args.train_on_prompt;
    opts.shard_tokens = args.shard_tokens;

    let bar = (!out.json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} files, {msg} [{elapsed}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let tokens_so_far = std::sync::atomic::AtomicU64::new(0);
    let on_file = |e: &FileEvent| {
        let total =
            tokens_so_far.fetch_add(e.tokens, std::sync::atomic::Ordering::Relaxed) + e.tokens;
        if !e.reused {
            out.event(&Event::IngestFile {
                file: e.file.clone(),
                tokens: e.tokens,
            });
        }
        if let Some(b) = &bar {
            b.set_length(e.total_files as u64);
            b.inc(1);
            b.set_message(format!("{total} tokens"));
        }
    };
    let started = std::time::Instant::now();
    let result = ingest(&tok, &opts, &on_file);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = result?;
    for w in &r.warnings {
        out.log(format!("warning: {w}"));
        out.event(&Event::Info {
            key: "warning".into(),
            value: serde_json::Value::String(w.clone()),
        });
    }
    if r.used_fallback_template {
        out.log("note: the tokenizer has no chat template; conversations were rendered as ChatML");
    }
    let s = &r.skipped;
    let skipped = r.unchanged + s.hidden + s.binary + s.empty + s.unsupported;
    out.event(&Event::Info {
        key: "ingest_summary".into(),
        value: serde_json::json!({
            "files": r.files.len(),
            "unchanged": r.unchanged,
            "hidden": s.hidden,
            "binary": s.binary,
            "empty": s.empty,
            "unsupported": s.unsupported,
            "warnings": r.warnings.len(),
            "split_tokens": r.split_tokens,
            "split_documents": r.split_documents,
            "masked": r.has_mask,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    });
    out.event(&Event::IngestDone {
        new_files: r.new_files,
        skipped,
        total_tokens: r.total_tokens,
        shards: r.shards,
        manifest: r.manifest.display().to_string(),
    });
    let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    out.log(format!(
        "ingested {} files ({} tokenised, {} unchanged): {} tokens in {} shards; train {} docs / {} tokens, val {} docs / {} tokens{}",
        r.files.len(),
        r.new_files,
        r.unchanged,
        r.total_tokens,
        r.shards,
        get(&r.split_documents, "train"),
        get(&r.split_tokens, "train"),
        get(&r.split_documents, "val"),
        get(&r.split_tokens, "val"),
        if r.has_mask { "; loss mask stored" } else { "" },
    ));
    out.log(format!(
        "skipped: {} hidden, {} binary, {} empty, {} unsupported; {} warnings; {:.2}s; manifest {}",
        s.hidden,
        s.binary,
        s.empty,
        s.unsupported,
        r.warnings.len(),
        started.elapsed().as_secs_f64(),
        r.manifest.display()
    ));
    Ok(())
}
