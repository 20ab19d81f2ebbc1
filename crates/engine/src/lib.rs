//! NeuralForge's compute engine: everything numeric, nothing about files or UIs.

pub mod amx;
pub mod config;
pub mod error;
pub mod frozen;
pub mod gemm;
pub mod init;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod optim;
pub mod params;
pub mod quant;
pub mod rng;
pub mod team;
pub mod threads;

pub use config::{ConfigError, ModelConfig};
pub use error::EngineError;
pub use params::{ParamLayout, Params, TensorSpec};

pub mod infer;
