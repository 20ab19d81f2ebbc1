//! Inference: KV cache, batched prefill, single-token decode, sampling.
