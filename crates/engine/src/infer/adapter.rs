//! A LoRA adapter applied unmerged at inference: each adapted projection `y = x Wᵀ` of a
//! layer gains `scale · (x Aᵀ) Bᵀ`, so a quantized base keeps its blocks and its memory
//! (merging needs the base in f32).

use super::kernels;
use crate::lora::{LoraParams, LoraTarget};

/// The adapter's view of one layer: adds nothing when the weights carry no adapter or the
/// adapter leaves a projection alone.
#[derive(Clone, Copy)]
pub(super) struct LayerAdapter<'a> {
    pub lora: Option<&'a LoraParams>,
    pub layer: usize,
}

impl LayerAdapter<'_> {
    /// `out[n, dout] += scale · (x[n, din] · Aᵀ) · Bᵀ` for projection `t`.
    pub fn add(&self, t: LoraTarget, x: &[f32], n: usize, out: &mut [f32]) {
        let Some(lora) = self.lora else { return };
        let Some((a, b)) = lora.ab(self.layer, t) else {
            return;
        };
        let (r, scale) = (lora.config.rank, lora.config.scale());
        let (din, dout) = (x.len() / n.max(1), out.len() / n.max(1));
        debug_assert!(a.len() == r * din && b.len() == dout * r);
        if n == 1 {
            // One decode row: a few thousand multiply-adds, cheaper inline than in a region.
            let ax: Vec<f32> = a.chunks_exact(din).map(|ar| kernels::dot(ar, x)).collect();
            for (o, br) in out.iter_mut().zip(b.chunks_exact(r)) {
                *o += scale * kernels::dot(br, &ax);
            }
            return;
        }
        let mut ax = vec![0f32; n * r];
        crate::gemm::sgemm(false, true, n, r, din, 1.0, x, din, a, din, 0.0, &mut ax, r);
        crate::gemm::sgemm(false, true, n, dout, r, scale, &ax, r, b, r, 1.0, out, dout);
    }
}
