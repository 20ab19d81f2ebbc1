//! `neuralforge completions bash|zsh|fish|elvish|powershell`: a shell completion script.

use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args, root: &mut clap::Command) -> anyhow::Result<()> {
    clap_complete::generate(args.shell, root, "neuralforge", &mut std::io::stdout());
    Ok(())
}
