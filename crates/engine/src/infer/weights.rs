//! The weights an inference session runs on: f32 `Params` (the reference path) or a
//! `QuantModel` (matrices in block formats), seen through one per-layer view.

use crate::config::ModelConfig;
use crate::params::Params;
use crate::quant::{QMatrix, QuantModel};

/// A model for inference.
#[derive(Clone, Copy)]
pub enum Weights<'p> {
    Dense(&'p Params),
    Quant(&'p QuantModel),
}

impl<'p> From<&'p Params> for Weights<'p> {
    fn from(p: &'p Params) -> Self {
        Weights::Dense(p)
    }
}

impl<'p> From<&'p QuantModel> for Weights<'p> {
    fn from(m: &'p QuantModel) -> Self {
        Weights::Quant(m)
    }
}

/// One weight matrix `[out, in]`.
#[derive(Clone, Copy)]
pub enum Mat<'a> {
    F32(&'a [f32]),
    Q(&'a QMatrix),
}

/// Borrowed views of one layer.
pub struct LayerW<'a> {
    pub attn_norm: &'a [f32],
    pub wq: Mat<'a>,
    pub wk: Mat<'a>,
    pub wv: Mat<'a>,
    pub bq: Option<&'a [f32]>,
    pub bk: Option<&'a [f32]>,
    pub bv: Option<&'a [f32]>,
    pub wo: Mat<'a>,
    pub ffn_norm: &'a [f32],
    pub w_gate: Mat<'a>,
    pub w_up: Mat<'a>,
    pub w_down: Mat<'a>,
}

impl<'p> Weights<'p> {
    pub fn config(&self) -> &'p ModelConfig {
        match self {
            Weights::Dense(p) => &p.config,
            Weights::Quant(m) => &m.config,
        }
    }

    pub fn layer(&self, l: usize) -> LayerW<'p> {
        match *self {
            Weights::Dense(p) => {
                let v = p.layer(l);
                LayerW {
                    attn_norm: v.attn_norm,
                    wq: Mat::F32(v.wq),
                    wk: Mat::F32(v.wk),
                    wv: Mat::F32(v.wv),
                    bq: v.bq,
                    bk: v.bk,
                    bv: v.bv,
                    wo: Mat::F32(v.wo),
                    ffn_norm: v.ffn_norm,
                    w_gate: Mat::F32(v.w_gate),
                    w_up: Mat::F32(v.w_up),
                    w_down: Mat::F32(v.w_down),
                }
            }
            Weights::Quant(m) => {
                let v = &m.layers[l];
                LayerW {
                    attn_norm: &v.attn_norm,
                    wq: Mat::Q(&v.wq),
                    wk: Mat::Q(&v.wk),
                    wv: Mat::Q(&v.wv),
                    bq: v.bq.as_deref(),
                    bk: v.bk.as_deref(),
                    bv: v.bv.as_deref(),
                    wo: Mat::Q(&v.wo),
                    ffn_norm: &v.ffn_norm,
                    w_gate: Mat::Q(&v.w_gate),
                    w_up: Mat::Q(&v.w_up),
                    w_down: Mat::Q(&v.w_down),
                }
            }
        }
    }

    /// The LoRA adapter run unmerged on top of the weights, if any.
    pub fn adapter(&self) -> Option<&'p crate::lora::LoraParams> {
        match self {
            Weights::Dense(_) => None,
            Weights::Quant(m) => m.adapter.as_ref(),
        }
    }

    pub fn final_norm(&self) -> &'p [f32] {
        match self {
            Weights::Dense(p) => p.final_norm(),
            Weights::Quant(m) => &m.final_norm,
        }
    }

    pub fn classifier(&self) -> Mat<'p> {
        match self {
            Weights::Dense(p) => Mat::F32(p.classifier()),
            Weights::Quant(m) => Mat::Q(m.classifier()),
        }
    }

    /// The embedding of token `t` (checked by the caller) into `out` (`dim` values).
    pub fn embed_row(&self, t: usize, out: &mut [f32]) {
        match self {
            Weights::Dense(p) => {
                let d = out.len();
                out.copy_from_slice(&p.embedding()[t * d..(t + 1) * d]);
            }
            Weights::Quant(m) => m.embedding.dequantize_row_into(t, out),
        }
    }

    /// Bytes of weights one decoded token reads.
    pub fn bytes_per_token(&self) -> u64 {
        match self {
            Weights::Dense(p) => super::bench::weight_bytes_per_token(&p.config),
            Weights::Quant(m) => m.weight_bytes_per_token(),
        }
    }
}
