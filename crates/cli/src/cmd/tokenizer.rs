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
    /// Output folder (tokenizer.json + tokenizer_config.json), or a NAME.json path (the
    /// config is then NAME_config.json beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace tokenizer files that already exist there.
    #[arg(long)]
    pub force: bool,
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

/// Where the tokenizer and its config go: `DIR/tokenizer.json` + `DIR/tokenizer_config.json`,
/// or `NAME.json` + `NAME_config.json` beside it (so `tokenizer.json` gets the usual name).
fn output_paths(out: &std::path::Path) -> (PathBuf, PathBuf) {
    if out.extension().is_some_and(|e| e == "json") {
        let stem = out
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("tokenizer");
        (
            out.to_path_buf(),
            out.with_file_name(format!("{stem}_config.json")),
        )
    } else {
        (
            out.join("tokenizer.json"),
            out.join("tokenizer_config.json"),
        )
    }
}

fn train(a: TrainArgs, out: &Output) -> anyhow::Result<()> {
    let (json_path, cfg_path) = output_paths(&a.out);
    // Checked before the (long) training: nothing is overwritten without --force.
    crate::overwrite::refuse_existing(&json_path, a.force, "--out")?;
    crate::overwrite::refuse_existing(&cfg_path, a.force, "--out's config")?;
    let opts = data::tokenizer::train::TrainOptions {
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
        files: a.files.clone(),
        show_progress: !out.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let tok = data::tokenizer::train::train_byte_level_bpe(&opts)?;
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&json_path, tok.to_tokenizer_json()?)
        .with_context(|| format!("writing {}", json_path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_goes_beside_the_tokenizer() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            output_paths(&p("tok.json")),
            (p("tok.json"), p("tok_config.json"))
        );
        assert_eq!(
            output_paths(&p("a/tokenizer.json")),
            (p("a/tokenizer.json"), p("a/tokenizer_config.json"))
        );
        assert_eq!(
            output_paths(&p("out")),
            (p("out/tokenizer.json"), p("out/tokenizer_config.json"))
        );
    }
}
