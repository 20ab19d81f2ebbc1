//! One module per subcommand; each has `Args` (clap) and `run(args, out)`.

pub mod bench;
pub mod eval;
pub mod train;
