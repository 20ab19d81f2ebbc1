//! `neuralforge`: one binary, one subcommand per job. Each subcommand lives in `cmd/`.

mod base_record;
mod cmd;
mod inputs;
mod modelfile;
mod output;
mod overwrite;
mod precision;
mod trainer;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "neuralforge",
    version,
    about = "Train, fine-tune and run small LLaMA-family models on your own machine"
)]
struct Cli {
    /// Print one JSON object per line (NDJSON) on stdout; human logs go to stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from scratch, fine-tune, or train a LoRA adapter.
    Train(cmd::train::Args),
    /// Mean cross-entropy and perplexity of a model over a token file.
    Eval(cmd::eval::Args),
    /// Measure the GEMM peak and training throughput (MFU) of this machine.
    Bench(cmd::bench::Args),
    /// Generate text from a model (KV cache, sampling, chat).
    Generate(cmd::generate::Args),
    /// Encode text with a model's tokenizer and print ids and pieces.
    Tokenize(cmd::tokenize::Args),
    /// Turn text, folders and JSONL into token shards for training.
    Ingest(cmd::ingest::Args),
    /// Import a GGUF, Hugging Face folder or llama2.c model into a native model folder.
    Import(cmd::import::Args),
    /// Export a model or adapter as GGUF, Hugging Face, llama2.c or PEFT.
    Export(cmd::export::Args),
    /// Facts about a model, checkpoint, adapter, tokenizer or dataset.
    Info(cmd::info::Args),
    /// Inspect ingested datasets (preview).
    Data(cmd::data::Args),
    /// Train tokenizers.
    Tokenizer(cmd::tokenizer::Args),
    /// Train a tiny model on a generated corpus for about a minute, then sample from it.
    Quickstart(cmd::quickstart::Args),
    /// The local web app: projects, live dashboard, queue, generation, data, history.
    Studio(cmd::studio::Args),
    /// A command's options as JSON (name, help, default, kind, group), e.g. `options train`.
    Options(cmd::options::Args),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions(cmd::completions::Args),
}

/// `NO_COLOR` set to anything non-empty turns colour off everywhere (https://no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The full command definition: clap's, with the train defaults shown in its help.
fn command() -> clap::Command {
    let cmd = cmd::options::with_train_defaults(Cli::command());
    if no_color() {
        cmd.color(clap::ColorChoice::Never)
    } else {
        cmd
    }
}

fn main() {
    let mut root = command();
    let cli = match root
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => std::process::exit(output::argument_error(e)),
    };
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a, &out),
        Command::Eval(a) => cmd::eval::run(a, &out),
        Command::Bench(a) => cmd::bench::run(a, &out),
        Command::Generate(a) => cmd::generate::run(a, &out),
        Command::Tokenize(a) => cmd::tokenize::run(a, &out),
        Command::Ingest(a) => cmd::ingest::run(a, &out),
        Command::Import(a) => cmd::import::run(a, &out),
        Command::Export(a) => cmd::export::run(a, &out),
        Command::Info(a) => cmd::info::run(a, &out),
        Command::Data(a) => cmd::data::run(a, &out),
        Command::Tokenizer(a) => cmd::tokenizer::run(a, &out),
        Command::Quickstart(a) => cmd::quickstart::run(a, &out),
        Command::Studio(a) => cmd::studio::run(a, &out),
        Command::Options(a) => cmd::options::run(a, &root, &out),
        Command::Completions(a) => cmd::completions::run(a, &mut root),
    };
    if let Err(err) = result {
        std::process::exit(out.fail(&err));
    }
}
