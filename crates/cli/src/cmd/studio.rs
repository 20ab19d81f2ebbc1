//! `neuralforge studio`: the local web app (crate `studio`).

use crate::output::Output;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; anything but loopback requires a token (one is generated).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port; the URL is printed on the first line).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Where the database, runs, datasets and exports live (default: the user's data dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Require this token (in the URL once, then a cookie), even on loopback.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Open the URL in a browser.
    #[arg(long)]
    pub open: bool,
    /// Rebuild the database from the run folders' events.ndjson before serving.
    #[arg(long)]
    pub reindex: bool,
}

pub fn run(args: Args, _out: &Output) -> anyhow::Result<()> {
    studio::serve(studio::Options {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir,
        token: args.token,
        open: args.open,
        reindex: args.reindex,
    })
    .context("studio")
}
