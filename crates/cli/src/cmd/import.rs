//! `neuralforge import SRC --out DIR`: any supported model (GGUF, Hugging Face folder,
//! llama2.c .bin) into our native folder, tokenizer included.

use super::export::{check_vocab, tokenizer_vocab, write_hf};
use crate::output::Output;
use anyhow::bail;
use formats::safetensors_io::DType;
use protocol::Event;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreDtype {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, a Hugging Face model folder or a llama2.c .bin (its tokenizer.bin or
    /// tok<vocab>.bin next to it is picked up).
    pub src: PathBuf,
    /// The folder to write (config.json, model.safetensors, tokenizer.json, ...).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage type of the weights (quantized sources are dequantized to f32 first).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: StoreDtype,
    /// Replace files in a folder that already holds a model.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    if args.out.join("config.json").exists() && !args.force {
        bail!(
            "{} already holds a model (config.json); pass --force to replace it",
            args.out.display()
        );
    }
    out.event(&Event::Phase {
        phase: "loading".into(),
    });
    let m = formats::load_model(&args.src)?;
    out.log(format!(
        "loaded {} ({}, {} parameters)",
        args.src.display(),
        m.source,
        m.params.data.len()
    ));
    match &m.tokenizer {
        Some(t) => check_vocab(&m, tokenizer_vocab(t)?, out)?,
        None => out.log("warning: no tokenizer found with this model; the folder will have none"),
    }
    let dtype = match args.dtype {
        StoreDtype::F32 => DType::F32,
        StoreDtype::F16 => DType::F16,
        StoreDtype::Bf16 => DType::BF16,
    };
    out.event(&Event::Phase {
        phase: "saving".into(),
    });
    write_hf(&args.out, &m, dtype, out)?;
    let has_tok = args.out.join("tokenizer.json").is_file();
    out.log(format!(
        "wrote {} ({}{})",
        args.out.display(),
        dtype.name(),
        if has_tok {
            ", with tokenizer.json"
        } else {
            ", no tokenizer"
        }
    ));
    out.event(&Event::Info {
        key: "imported".into(),
        value: serde_json::json!({
            "source": m.source,
            "path": args.out,
            "params": m.params.data.len(),
            "tokenizer": has_tok,
            "chat_template": m.chat_template.is_some(),
        }),
    });
    Ok(())
}
