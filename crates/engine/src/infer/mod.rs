//! Inference: KV cache, batched prefill, single-token decode, sampling.
//!
//! Decode is memory-bound (every weight is read once per token), so it runs on a
//! multithreaded SIMD matrix-vector kernel; the prompt is processed in batches with GEMM.

mod adapter;
pub mod bench;
mod decode_attention;
pub mod generate;
pub mod kernels;
pub mod kv;
pub mod logprobs;
mod prefill_attention;
pub mod sampler;
pub mod session;
pub mod weights;

pub use generate::{generate, GenerateOptions, StopReason};
pub use kernels::Simd;
pub use kv::{KvCache, KvType};
pub use logprobs::LogSoftmax;
pub use sampler::{argmax, Sampler, SamplerConfig, SamplerError, SmallRng};
pub use session::{InferError, InferenceSession};
pub use weights::{Mat, Weights};
