//! NeuralForge's compute engine: everything numeric, nothing about files or UIs.

pub mod config;
pub mod params;

pub use config::{ConfigError, ModelConfig};
pub use params::{ParamLayout, Params, TensorSpec};

pub mod infer;
