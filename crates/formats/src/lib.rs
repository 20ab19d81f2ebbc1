//! Model files in and out. Nothing here computes; everything here distrusts its input.
//!
//! Every reader produces [`engine::Params`] in the internal layout (Hugging Face names,
//! row-major `[out, in]`, rotate-half RoPE); every writer converts back at the file boundary.

pub mod big_read;
pub mod checkpoint;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod llama2c;
pub mod peft;
pub mod rope;
pub mod safetensors_io;

mod assemble;
mod model;

pub use error::{FormatError, Result};
pub use model::{detect_format, load_model, LoadedModel, ModelFormat, TokenizerSource};
