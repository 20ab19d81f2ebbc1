//! AdamW, global-norm gradient clipping and learning-rate schedules, with the exact formulas
//! of PyTorch's `torch.optim.AdamW` and `clip_grad_norm_` (see the fixtures README).

use crate::kernels::simd::{adamw_update, AdamWConsts};
use crate::params::ParamLayout;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task in the optimizer loops.
const CHUNK: usize = 1 << 16;

/// AdamW with bias correction and decoupled weight decay.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// First and second moments, one per parameter.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub t: u64,
}

impl AdamW {
    pub fn new(n: usize, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> AdamW {
        AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `params` from `grads`. Weight decay applies only to the index ranges in
    /// `decay` (2-D tensors; see `decay_ranges`). Panics if the lengths differ from `m`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64, decay: &[Range<usize>]) {
        assert!(
            params.len() == self.m.len() && grads.len() == self.m.len(),
            "AdamW: buffer length mismatch"
        );
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - (b1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt() as f32;
        let step_size = (lr / bc1) as f32;
        let lr = lr as f32;
        let eps = self.eps;
        // Elementwise, so splitting into parallel chunks cannot change any result.
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay_factor: f32| {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| {
                    let k = AdamWConsts {
                        decay_factor,
                        b1,
                        b2,
                        bc2_sqrt,
                        eps,
                        step_size,
                    };
                    adamw_update(p, g, m, v, k);
                });
        };
        let mut pos = 0;
        let mut sorted: Vec<Range<usize>> = decay.to_vec();
        sorted.sort_by_key(|r| r.start);
        let mut segments: Vec<(Range<usize>, bool)> = Vec::new();
        for r in sorted {
            let r = r.start.max(pos)..r.end.min(params.len());
            if r.start >= r.end {
                continue;
            }
            if r.start > pos {
                segments.push((pos..r.start, false));
            }
            pos = r.end;
            segments.push((r, true));
        }
        if pos < params.len() {
            segments.push((pos..params.len(), false));
        }
        let wd = 1.0 - lr * self.weight_decay;
        for (r, decays) in segments {
            update(
                &mut params[r.clone()],
                &grads[r.clone()],
                &mut self.m[r.clone()],
                &mut self.v[r],
                if decays { wd } else { 1.0 },
            );
        }
    }
}

/// Index ranges of the tensors with two or more dimensions (the ones weight decay applies to).
pub fn decay_ranges(layout: &ParamLayout) -> Vec<Range<usize>> {
    layout
        .tensors
        .iter()
        .filter(|t| t.shape.len() >= 2)
        .map(|t| t.range())
        .collect()
}

/// Global L2 norm of `grads` (computed in f64, in a fixed order).
pub fn grad_norm(grads: &[f32]) -> f64 {
    // Per-chunk partial sums, added in chunk order: the same result on any thread count.
    let partials: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(crate::kernels::simd::sum_squares_f64)
        .collect();
    partials.iter().sum::<f64>().sqrt()
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (PyTorch's rule:
/// coefficient max_norm / (norm + 1e-6), applied only when below 1). Returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        grads
            .par_chunks_mut(CHUNK)
            .for_each(|g| g.iter_mut().for_each(|g| *g *= c));
    }
    norm
}

/// Shape of the learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = crate::error::EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(ScheduleKind::Cosine),
            "linear" => Ok(ScheduleKind::Linear),
            "constant" => Ok(ScheduleKind::Constant),
            _ => Err(crate::error::EngineError::Invalid {
                field: "learning-rate schedule",
                value: format!("{s:?}"),
                rule: "cosine, linear or constant",
            }),
        }
    }
}

/// Linear warmup to `lr_max`, then decay to `lr_min` at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub lr_max: f64,
    pub lr_min: f64,
    pub warmup: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// Learning rate at 0-based optimizer step `step`: `lr_max * (step+1) / warmup` while
    /// `step < warmup`, then the decay curve over `(step - warmup) / (total - warmup)`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr_max * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.lr_max,
            ScheduleKind::Linear => self.lr_max - (self.lr_max - self.lr_min) * progress,
            ScheduleKind::Cosine => {
                self.lr_min
                    + 0.5
                        * (self.lr_max - self.lr_min)
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_fixture_formula() {
        let s = LrSchedule {
            kind: ScheduleKind::Cosine,
            lr_max: 0.003,
            lr_min: 0.0003,
            warmup: 3,
            total_steps: 12,
        };
        assert!((s.lr_at(0) - 0.001).abs() < 1e-15);
        assert!((s.lr_at(3) - 0.003).abs() < 1e-15);
        assert!((s.lr_at(4) - 0.0029185850380609763).abs() < 1e-15);
        assert!((s.lr_at(6) - 0.002325).abs() < 1e-15);
    }

    #[test]
    fn clipping_and_one_adam_step() {
        let mut g = vec![3.0f32, 4.0];
        assert!((clip_grad_norm(&mut g, 1.0) - 5.0).abs() < 1e-12);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        // First step: m_hat = g, v_hat = g^2, so each parameter moves by about lr * sign(g),
        // after decay of the decayed range only.
        let mut opt = AdamW::new(2, 0.9, 0.95, 1e-8, 0.1);
        let mut p = vec![1.0f32, 1.0];
        let decay = [0..1usize, 1..1];
        opt.step(&mut p, &[0.5, -2.0], 0.01, &decay);
        assert!(
            (p[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{}",
            p[0]
        );
        assert!((p[1] - (1.0 + 0.01)).abs() < 1e-6, "{}", p[1]);
    }
}
