//! One module per subcommand; each has `Args` (clap) and `run(args, out)`.

pub mod bench;
pub mod chat_messages;
pub mod completions;
pub mod data;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod info;
pub mod ingest;
pub mod options;
pub mod quickstart;
pub mod studio;
pub mod tokenize;
pub mod tokenizer;
pub mod train;
