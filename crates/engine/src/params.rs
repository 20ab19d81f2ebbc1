//! All trainable tensors of a model in one flat f32 buffer (llm.c style): laid out once,
//! addressed by name (Hugging Face names) or through typed per-layer views.
//!
//! Internal conventions (every importer/exporter converts at the file boundary):
//! - matrices are row-major `[out, in]` as in PyTorch's `nn.Linear.weight`;
//! - rotary embeddings use the Hugging Face "rotate half" pairing (dimension i pairs with
//!   i + head_dim/2 inside each head), so HF folders load without permuting q/k.

use crate::config::ModelConfig;
use std::sync::Arc;

/// One named tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// Where each tensor of a model lives in the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    pub total: usize,
}

/// Hugging Face tensor names of layer `l`.
pub mod names {
    pub const EMBED: &str = "model.embed_tokens.weight";
    pub const FINAL_NORM: &str = "model.norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";
    pub fn layer(l: usize, suffix: &str) -> String {
        format!("model.layers.{l}.{suffix}")
    }
    pub const ATTN_NORM: &str = "input_layernorm.weight";
    pub const FFN_NORM: &str = "post_attention_layernorm.weight";
    pub const WQ: &str = "self_attn.q_proj.weight";
    pub const WK: &str = "self_attn.k_proj.weight";
    pub const WV: &str = "self_attn.v_proj.weight";
    pub const WO: &str = "self_attn.o_proj.weight";
    pub const BQ: &str = "self_attn.q_proj.bias";
    pub const BK: &str = "self_attn.k_proj.bias";
    pub const BV: &str = "self_attn.v_proj.bias";
    pub const W_GATE: &str = "mlp.gate_proj.weight";
    pub const W_UP: &str = "mlp.up_proj.weight";
    pub const W_DOWN: &str = "mlp.down_proj.weight";
}

impl ParamLayout {
    /// The layout of `cfg` (which must have passed `validate`).
    pub fn for_config(cfg: &ModelConfig) -> ParamLayout {
        let (d, h, kv, v) = (cfg.dim, cfg.hidden_dim, cfg.kv_dim(), cfg.vocab_size);
        let mut tensors = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>| {
            let spec = TensorSpec {
                name,
                shape,
                offset,
            };
            offset += spec.numel();
            tensors.push(spec);
        };
        push(names::EMBED.into(), vec![v, d]);
        for l in 0..cfg.n_layers {
            let n = |s: &str| names::layer(l, s);
            push(n(names::ATTN_NORM), vec![d]);
            push(n(names::WQ), vec![d, d]);
            push(n(names::WK), vec![kv, d]);
            push(n(names::WV), vec![kv, d]);
            if cfg.qkv_bias {
                push(n(names::BQ), vec![d]);
                push(n(names::BK), vec![kv]);
                push(n(names::BV), vec![kv]);
            }
            push(n(names::WO), vec![d, d]);
            push(n(names::FFN_NORM), vec![d]);
            push(n(names::W_GATE), vec![h, d]);
            push(n(names::W_UP), vec![h, d]);
            push(n(names::W_DOWN), vec![d, h]);
        }
        push(names::FINAL_NORM.into(), vec![d]);
        if !cfg.tied_embeddings {
            push(names::LM_HEAD.into(), vec![v, d]);
        }
        ParamLayout {
            tensors,
            total: offset,
        }
    }

    pub fn find(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A model's tensors (weights, or gradients of the same shapes).
#[derive(Debug, Clone)]
pub struct Params {
    pub config: ModelConfig,
    pub layout: Arc<ParamLayout>,
    pub data: Vec<f32>,
}

/// Borrowed views of one transformer layer's tensors.
pub struct LayerView<'a> {
    pub attn_norm: &'a [f32],
    pub wq: &'a [f32],
    pub wk: &'a [f32],
    pub wv: &'a [f32],
    pub bq: Option<&'a [f32]>,
    pub bk: Option<&'a [f32]>,
    pub bv: Option<&'a [f32]>,
    pub wo: &'a [f32],
    pub ffn_norm: &'a [f32],
    pub w_gate: &'a [f32],
    pub w_up: &'a [f32],
    pub w_down: &'a [f32],
}

impl Params {
    /// All-zero tensors for `cfg` (validated here; the caller checks memory first if it cares).
    pub fn zeros(cfg: &ModelConfig) -> Result<Params, crate::config::ConfigError> {
        cfg.validate()?;
        let layout = Arc::new(ParamLayout::for_config(cfg));
        Ok(Params {
            config: cfg.clone(),
            data: vec![0.0; layout.total],
            layout,
        })
    }

    /// Zeros with the same layout as `self` (e.g. a gradient buffer).
    pub fn zeros_like(&self) -> Params {
        Params {
            config: self.config.clone(),
            layout: self.layout.clone(),
            data: vec![0.0; self.data.len()],
        }
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.layout.find(name).map(|t| &self.data[t.range()])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let r = self.layout.find(name)?.range();
        Some(&mut self.data[r])
    }

    /// The slice of tensor `i` of the layout.
    pub fn tensor(&self, i: usize) -> &[f32] {
        &self.data[self.layout.tensors[i].range()]
    }

    fn req(&self, name: &str) -> &[f32] {
        // The layout is built from the config, so every name it is asked for exists.
        self.get(name)
            .unwrap_or_else(|| panic!("tensor {name} missing from layout"))
    }

    pub fn embedding(&self) -> &[f32] {
        self.req(names::EMBED)
    }

    pub fn final_norm(&self) -> &[f32] {
        self.req(names::FINAL_NORM)
    }

    /// The classifier matrix `[vocab, dim]` (the embedding when tied).
    pub fn classifier(&self) -> &[f32] {
        if self.config.tied_embeddings {
            self.embedding()
        } else {
            self.req(names::LM_HEAD)
        }
    }

    pub fn layer(&self, l: usize) -> LayerView<'_> {
        let n = |s: &str| names::layer(l, s);
        let bias = |s: &str| {
            if self.config.qkv_bias {
                Some(self.req(&n(s)))
            } else {
                None
            }
        };
        LayerView {
            attn_norm: self.req(&n(names::ATTN_NORM)),
            wq: self.req(&n(names::WQ)),
            wk: self.req(&n(names::WK)),
            wv: self.req(&n(names::WV)),
            bq: bias(names::BQ),
            bk: bias(names::BK),
            bv: bias(names::BV),
            wo: self.req(&n(names::WO)),
            ffn_norm: self.req(&n(names::FFN_NORM)),
            w_gate: self.req(&n(names::W_GATE)),
            w_up: self.req(&n(names::W_UP)),
            w_down: self.req(&n(names::W_DOWN)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_total_matches_param_count() {
        for name in ModelConfig::PRESETS {
            let cfg = ModelConfig::preset(name).unwrap();
            assert_eq!(
                ParamLayout::for_config(&cfg).total,
                cfg.param_count(),
                "{name}"
            );
        }
    }

    #[test]
    fn tied_model_has_no_lm_head() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let p = Params::zeros(&cfg).unwrap();
        assert!(p.get(names::LM_HEAD).is_none());
        assert_eq!(p.classifier().len(), cfg.vocab_size * cfg.dim);
    }
}
