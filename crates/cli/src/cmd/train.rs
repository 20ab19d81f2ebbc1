//! `neuralforge train`: flags and config file in, a training run out (see `trainer`).

use crate::output::Output;
use crate::trainer::{self, settings::Settings, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Boxed: the settings are large and `Command` holds one variant per subcommand.
    #[command(flatten)]
    pub settings: Box<Settings>,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    match trainer::run(*args.settings, out)? {
        Outcome::Finished { .. } | Outcome::DryRun => Ok(()),
        Outcome::Interrupted { exit_code, .. } => std::process::exit(exit_code),
    }
}
