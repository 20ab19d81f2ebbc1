//! `neuralforge tokenize`: encode text with a model's tokenizer; print ids and pieces.

use crate::output::Output;
use anyhow::Context;
use protocol::Event;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, tokenizer.json, llama2.c tokenizer.bin, or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Text to encode.
    #[arg(long)]
    pub text: String,
    /// Do not prepend BOS even when the tokenizer adds it by default.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn special tokens written in the text ("<|im_end|>", "<s>") into their ids.
    #[arg(long)]
    pub special: bool,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    let tok = data::Tokenizer::from_path(&args.model)
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let add_bos = tok.add_bos() && !args.no_bos;
    let ids = if args.special {
        tok.encode_special(&args.text, add_bos)?
    } else {
        tok.encode(&args.text, add_bos)?
    };
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| tok.id_to_piece(i).unwrap_or_default())
        .collect();
    if out.json {
        out.event(&Event::Info {
            key: "tokens".into(),
            value: serde_json::json!({
                "count": ids.len(),
                "ids": ids,
                "pieces": pieces,
                "vocab_size": tok.vocab_size(),
                "bos_id": tok.bos_id(),
                "eos_id": tok.eos_id(),
            }),
        });
        return Ok(());
    }
    println!("{} tokens: {:?}", ids.len(), ids);
    for (id, piece) in ids.iter().zip(&pieces) {
        println!("{id:>8}  {piece:?}");
    }
    Ok(())
}
