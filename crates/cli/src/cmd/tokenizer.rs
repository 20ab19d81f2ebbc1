//! `neuralforge tokenizer train`: a byte-level BPE tokenizer for models trained from scratch.

use crate::output::Output;
use anyhow::Context;
use protocol::Event;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train byte-level BPE (special tokens <|endoftext|>, <|im_start|>, <|im_end|>; ChatML template).
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Vocabulary size, special tokens and the 256 byte symbols included.
    #[arg(long)]
    pub vocab_size: usize,
    /// Output tokenizer.json path (tokenizer_config.json is written beside it), or a folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Text files to learn from.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    match args.command {
        Command::Train(a) => train(a, out),
    }
}

fn train(a: TrainArgs, out: &Output) -> anyhow::Result<()> {
    let opts = data::tokenizer::train::TrainOptions {
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
        files: a.files.clone(),
        show_progress: !out.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let tok = data::tokenizer::train::train_byte_level_bpe(&opts)?;
    let json_path = if a.out.extension().is_some_and(|e| e == "json") {
        a.out.clone()
    } else {
        a.out.join("tokenizer.json")
    };
    let dir = json_path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&json_path, tok.to_tokenizer_json()?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let cfg_path = dir.join("tokenizer_config.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string_pretty(&tok.tokenizer_config_json())?,
    )
    .with_context(|| format!("writing {}", cfg_path.display()))?;
    out.event(&Event::Info {
        key: "tokenizer".into(),
        value: serde_json::json!({
            "path": json_path.display().to_string(),
            "config": cfg_path.display().to_string(),
            "vocab_size": tok.vocab_size(),
            "bos_id": tok.bos_id(),
            "eos_id": tok.eos_id(),
            "pad_id": tok.pad_id(),
        }),
    });
    out.log(format!(
        "wrote {} ({} tokens) and {}",
        json_path.display(),
        tok.vocab_size(),
        cfg_path.display()
    ));
    Ok(())
}
