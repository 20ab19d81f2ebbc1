//! `neuralforge`: one binary, one subcommand per job. Each subcommand lives in `cmd/`.

mod cmd;
mod output;

use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a, &out),
        Command::Eval(a) => cmd::eval::run(a, &out),
        Command::Bench(a) => cmd::bench::run(a, &out),
    };
    if let Err(err) = result {
        std::process::exit(out.fail(&err));
    }
}
