//! LoRA adapters (PEFT layout and names): for a target projection W `[out, in]`,
//! y = x W^T + scale * dropout(x) A^T B^T with A `[r, in]`, B `[out, r]`, scale = alpha / r.
//! The base model stays frozen; only A and B train.

use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::params::{ParamLayout, Params, TensorSpec};
use crate::rng::Rng;
use std::sync::Arc;

/// A projection LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The module path inside a layer, as PEFT and transformers name it.
    pub fn module(self) -> &'static str {
        match self {
            LoraTarget::Q => "self_attn.q_proj",
            LoraTarget::K => "self_attn.k_proj",
            LoraTarget::V => "self_attn.v_proj",
            LoraTarget::O => "self_attn.o_proj",
            LoraTarget::Gate => "mlp.gate_proj",
            LoraTarget::Up => "mlp.up_proj",
            LoraTarget::Down => "mlp.down_proj",
        }
    }

    /// Short name ("q", "gate", ...).
    pub fn short(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
        }
    }

    /// (in, out) features of the adapted projection.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        let (d, kv, h) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
        match self {
            LoraTarget::Q | LoraTarget::O => (d, d),
            LoraTarget::K | LoraTarget::V => (d, kv),
            LoraTarget::Gate | LoraTarget::Up => (d, h),
            LoraTarget::Down => (h, d),
        }
    }
}

impl std::fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short())
    }
}

impl std::str::FromStr for LoraTarget {
    type Err = EngineError;
    /// Accepts "q" and "q_proj" spellings (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let short = lower.strip_suffix("_proj").unwrap_or(&lower);
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.short() == short)
            .ok_or_else(|| EngineError::Invalid {
                field: "LoRA target",
                value: format!("{s:?}"),
                rule: "one of q, k, v, o, gate, up, down",
            })
    }
}

/// Adapter hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Adapted projections; kept sorted and unique by `normalized()`.
    pub targets: Vec<LoraTarget>,
    /// Dropout probability on the adapter input during training (0 = none).
    pub dropout: f32,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }

    /// Targets sorted in the canonical order, duplicates removed.
    pub fn normalized(&self) -> LoraConfig {
        let mut c = self.clone();
        c.targets.sort();
        c.targets.dedup();
        c
    }

    pub fn validate(&self, cfg: &ModelConfig) -> Result<(), EngineError> {
        let max_rank = cfg.dim.min(cfg.hidden_dim).min(cfg.kv_dim());
        if self.rank == 0 || self.rank > max_rank {
            return Err(EngineError::Invalid {
                field: "LoRA rank",
                value: self.rank.to_string(),
                rule: "between 1 and the smallest adapted dimension",
            });
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(EngineError::Invalid {
                field: "LoRA alpha",
                value: self.alpha.to_string(),
                rule: "a positive finite number",
            });
        }
        if self.targets.is_empty() {
            return Err(EngineError::Invalid {
                field: "LoRA targets",
                value: "[]".into(),
                rule: "at least one of q, k, v, o, gate, up, down",
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(EngineError::Invalid {
                field: "LoRA dropout",
                value: self.dropout.to_string(),
                rule: "in [0, 1)",
            });
        }
        Ok(())
    }

    /// Position of `t` among the (normalized) targets.
    pub fn index_of(&self, t: LoraTarget) -> Option<usize> {
        self.targets.iter().position(|x| *x == t)
    }
}

/// PEFT's name of a LoRA matrix ("A" or "B").
pub fn tensor_name(layer: usize, t: LoraTarget, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{which}.weight",
        t.module()
    )
}

/// Adapter weights (or their gradients) in one flat buffer: for each layer, for each target
/// in canonical order, A `[r, in]` then B `[out, r]`.
#[derive(Debug, Clone)]
pub struct LoraParams {
    pub config: LoraConfig,
    pub layout: Arc<ParamLayout>,
    pub data: Vec<f32>,
}

impl LoraParams {
    pub fn layout_for(cfg: &ModelConfig, lora: &LoraConfig) -> ParamLayout {
        let lora = lora.normalized();
        let mut tensors = Vec::new();
        let mut offset = 0;
        for l in 0..cfg.n_layers {
            for &t in &lora.targets {
                let (din, dout) = t.dims(cfg);
                for (which, shape) in [('A', vec![lora.rank, din]), ('B', vec![dout, lora.rank])] {
                    let spec = TensorSpec {
                        name: tensor_name(l, t, which),
                        shape,
                        offset,
                    };
                    offset += spec.numel();
                    tensors.push(spec);
                }
            }
        }
        ParamLayout {
            tensors,
            total: offset,
        }
    }

    /// All-zero adapter.
    pub fn zeros(cfg: &ModelConfig, lora: &LoraConfig) -> Result<LoraParams, EngineError> {
        cfg.validate()?;
        lora.validate(cfg)?;
        let layout = Arc::new(LoraParams::layout_for(cfg, lora));
        Ok(LoraParams {
            config: lora.normalized(),
            data: vec![0.0; layout.total],
            layout,
        })
    }

    /// A fresh adapter as PEFT initialises it: A ~ kaiming-uniform(a = sqrt(5)), i.e.
    /// U(-1/sqrt(in), 1/sqrt(in)); B = 0 (so the adapted model starts equal to the base).
    pub fn init(
        cfg: &ModelConfig,
        lora: &LoraConfig,
        rng: &mut Rng,
    ) -> Result<LoraParams, EngineError> {
        let mut p = LoraParams::zeros(cfg, lora)?;
        for spec in p
            .layout
            .tensors
            .iter()
            .filter(|t| t.name.contains("lora_A"))
        {
            let bound = 1.0 / (spec.shape[1] as f64).sqrt();
            for x in &mut p.data[spec.range()] {
                *x = ((rng.uniform() * 2.0 - 1.0) * bound) as f32;
            }
        }
        Ok(p)
    }

    /// Index into `layout.tensors` of A for (layer, target); B follows it.
    pub fn tensor_index(&self, layer: usize, t: LoraTarget) -> Option<usize> {
        let ti = self.config.index_of(t)?;
        Some((layer * self.config.targets.len() + ti) * 2)
    }

    /// (A, B) of a layer's target.
    pub fn ab(&self, layer: usize, t: LoraTarget) -> Option<(&[f32], &[f32])> {
        let i = self.tensor_index(layer, t)?;
        let (a, b) = (&self.layout.tensors[i], &self.layout.tensors[i + 1]);
        Some((&self.data[a.range()], &self.data[b.range()]))
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.layout.find(name).map(|t| &self.data[t.range()])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let r = self.layout.find(name)?.range();
        Some(&mut self.data[r])
    }

    /// Errors unless this adapter's tensors are those of a model shaped `cfg`.
    pub fn check_shape(&self, cfg: &ModelConfig) -> Result<(), EngineError> {
        if LoraParams::layout_for(cfg, &self.config) != *self.layout {
            return Err(EngineError::Invalid {
                field: "LoRA adapter",
                value: "a different model shape".into(),
                rule: "made for this model's dimensions and layer count",
            });
        }
        Ok(())
    }

    /// W += scale * B A for every adapted projection (the adapter baked into the weights).
    pub fn merge_into(&self, params: &mut Params) -> Result<(), EngineError> {
        let cfg = params.config.clone();
        self.check_shape(&cfg)?;
        let scale = self.config.scale();
        let r = self.config.rank;
        for l in 0..cfg.n_layers {
            for &t in &self.config.targets {
                let (din, dout) = t.dims(&cfg);
                let (a, b) = self.ab(l, t).ok_or(EngineError::Overflow("LoRA layout"))?;
                let name = crate::params::names::layer(l, &format!("{}.weight", t.module()));
                let w = params.get_mut(&name).ok_or(EngineError::Invalid {
                    field: "LoRA adapter",
                    value: name.clone(),
                    rule: "naming a projection the model has",
                })?;
                crate::gemm::sgemm(false, false, dout, din, r, scale, b, r, a, din, 1.0, w, din);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_names_tensors_like_peft() {
        assert_eq!("q_proj".parse::<LoraTarget>().unwrap(), LoraTarget::Q);
        assert_eq!("Gate".parse::<LoraTarget>().unwrap(), LoraTarget::Gate);
        assert!("x".parse::<LoraTarget>().is_err());
        assert_eq!(
            tensor_name(3, LoraTarget::Down, 'B'),
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
        );
    }

    #[test]
    fn merge_adds_scaled_product() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let lc = LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec![LoraTarget::V],
            dropout: 0.0,
        };
        let mut lp = LoraParams::init(&cfg, &lc, &mut Rng::new(1)).unwrap();
        let bname = tensor_name(1, LoraTarget::V, 'B');
        lp.get_mut(&bname)
            .unwrap()
            .iter_mut()
            .for_each(|x| *x = 1.0);
        let mut p = Params::zeros(&cfg).unwrap();
        lp.merge_into(&mut p).unwrap();
        let a = lp.get(&tensor_name(1, LoraTarget::V, 'A')).unwrap();
        let w = p.get("model.layers.1.self_attn.v_proj.weight").unwrap();
        // row 0, column 5: scale * sum_r B[0,r] A[r,5]
        let expect = 2.0 * (a[5] + a[cfg.dim + 5]);
        assert!((w[5] - expect).abs() < 1e-6);
        assert!(p
            .get("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .iter()
            .all(|x| *x == 0.0));
    }
}
