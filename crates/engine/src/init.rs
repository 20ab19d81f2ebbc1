//! Fresh weights for training from scratch (GPT-2 / llama2.c style).

use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::params::{names, Params};
use crate::rng::Rng;

/// Matrices N(0, 0.02); residual projections (o_proj, down_proj) N(0, 0.02 / sqrt(2 L));
/// norm weights 1; biases 0. Deterministic for a given seed.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> Result<Params, EngineError> {
    let mut p = Params::zeros(cfg)?;
    let mut rng = Rng::new(seed);
    let residual_std = 0.02 / (2.0 * cfg.n_layers as f64).sqrt();
    let layout = p.layout.clone();
    for t in &layout.tensors {
        let slice = &mut p.data[t.range()];
        if t.shape.len() == 1 {
            let is_norm = t.name.ends_with("norm.weight");
            slice.fill(if is_norm { 1.0 } else { 0.0 });
            continue;
        }
        let std = if t.name.ends_with(names::WO) || t.name.ends_with(names::W_DOWN) {
            residual_std
        } else {
            0.02
        };
        for x in slice {
            *x = (rng.normal() * std) as f32;
        }
    }
    Ok(p)
}
