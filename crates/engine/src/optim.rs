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

    /// One update of `params` from the accumulated gradient `grads`, taken as
    /// `grads * scale.mean * scale.clip` (see `grad_stats`). Weight decay applies only to the
    /// index ranges in `decay` (2-D tensors; see `decay_ranges`). Leaves `grads` zeroed, ready
    /// for the next accumulation: averaging, clipping, the update and the clearing are one
    /// pass over memory instead of four. Panics if the lengths differ from `m`.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        scale: GradScale,
        lr: f64,
        decay: &[Range<usize>],
    ) {
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
        let update =
            |p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32], decay_factor: f32| {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks_mut(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((p, g), (m, v))| {
                        let k = AdamWConsts {
                            grad_mean: scale.mean,
                            grad_clip: scale.clip,
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
                &mut grads[r.clone()],
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

/// The factors that turn an accumulated gradient sum into the gradient AdamW applies: the
/// mean over target tokens, then PyTorch's clip coefficient (1 when not clipping). Applied in
/// that order, they give bitwise what scaling and then clipping the buffer in place gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradScale {
    pub mean: f32,
    pub clip: f32,
}

impl GradScale {
    /// The gradient as stored, unscaled.
    pub const ONE: GradScale = GradScale {
        mean: 1.0,
        clip: 1.0,
    };
}

/// What one read of the accumulated gradients tells the optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradStats {
    /// Global L2 norm of the mean gradient, before clipping (what PyTorch's
    /// `clip_grad_norm_` returns).
    pub norm: f64,
    pub scale: GradScale,
}

/// Norm and scale of the mean gradient `grad_sum / count`, clipped to `max_norm` with
/// PyTorch's rule (coefficient max_norm / (norm + 1e-6), applied only when below 1);
/// `max_norm` 0 turns clipping off. `count` 0 (no target token) gives a zero gradient.
pub fn grad_stats(grad_sum: &[f32], count: usize, max_norm: f64) -> GradStats {
    let mean = if count > 0 { 1.0 / count as f32 } else { 0.0 };
    let norm = scaled_norm(grad_sum, mean);
    let coef = max_norm / (norm + 1e-6);
    let clip = if max_norm > 0.0 && coef < 1.0 {
        coef as f32
    } else {
        1.0
    };
    GradStats {
        norm,
        scale: GradScale { mean, clip },
    }
}

/// Global L2 norm of `grads` (computed in f64, in a fixed order).
pub fn grad_norm(grads: &[f32]) -> f64 {
    scaled_norm(grads, 1.0)
}

/// L2 norm of `grads * scale`, each product rounded to f32 as if scaled in place.
fn scaled_norm(grads: &[f32], scale: f32) -> f64 {
    // Per-chunk partial sums, added in chunk order: the same result on any thread count.
    let partials: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| crate::kernels::simd::sum_squares_f64(c, scale))
        .collect();
    partials.iter().sum::<f64>().sqrt()
}

/// Zeroes `grads` in parallel (after a skipped step; `AdamW::step` clears them itself).
pub fn zero_grads(grads: &mut [f32]) {
    grads.par_chunks_mut(CHUNK).for_each(|g| g.fill(0.0));
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
        // Sum of two tokens' gradients: the mean is (3, 4), norm 5, clipped to norm 1.
        let mut g = vec![6.0f32, 8.0];
        let stats = grad_stats(&g, 2, 1.0);
        assert!((stats.norm - 5.0).abs() < 1e-12);
        assert_eq!(stats.scale.mean, 0.5);
        assert!((stats.scale.clip as f64 - 1.0 / (5.0 + 1e-6)).abs() < 1e-7);
        assert_eq!(grad_stats(&g, 2, 0.0).scale.clip, 1.0, "0 = no clipping");
        assert_eq!(grad_stats(&g, 2, 10.0).scale.clip, 1.0, "under the limit");
        // First step: m_hat = g, v_hat = g^2, so each parameter moves by about lr * sign(g),
        // after decay of the decayed range only.
        let mut opt = AdamW::new(2, 0.9, 0.95, 1e-8, 0.1);
        let mut p = vec![1.0f32, 1.0];
        let decay = [0..1usize, 1..1];
        g.copy_from_slice(&[0.5, -2.0]);
        opt.step(&mut p, &mut g, GradScale::ONE, 0.01, &decay);
        assert!(
            (p[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{}",
            p[0]
        );
        assert!((p[1] - (1.0 + 0.01)).abs() < 1e-6, "{}", p[1]);
        assert_eq!(g, [0.0, 0.0], "the step clears the gradient it used");
    }

    /// The fused step gives bitwise what averaging and clipping in place, then stepping, gives.
    #[test]
    fn fused_scaling_equals_scaling_in_place() {
        let n = 3 * CHUNK + 77;
        let mut rng = crate::rng::Rng::new(5);
        let sum: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 40.0).collect();
        let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let decay = [0..n / 3, n / 2..n];
        let count = 37usize;

        let mut reference = sum.clone();
        let inv = 1.0 / count as f32;
        reference.iter_mut().for_each(|g| *g *= inv);
        let norm = grad_norm(&reference);
        let coef = (1.0 / (norm + 1e-6)) as f32;
        assert!(coef < 1.0, "the test must exercise clipping");
        reference.iter_mut().for_each(|g| *g *= coef);
        let mut p_ref = p0.clone();
        let mut opt_ref = AdamW::new(n, 0.9, 0.95, 1e-8, 0.1);
        opt_ref.step(&mut p_ref, &mut reference, GradScale::ONE, 1e-3, &decay);

        let mut fused = sum.clone();
        let stats = grad_stats(&fused, count, 1.0);
        assert_eq!(stats.norm, norm);
        let mut p = p0.clone();
        let mut opt = AdamW::new(n, 0.9, 0.95, 1e-8, 0.1);
        opt.step(&mut p, &mut fused, stats.scale, 1e-3, &decay);
        assert!(p
            .iter()
            .zip(&p_ref)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(opt.m == opt_ref.m && opt.v == opt_ref.v);
        assert!(fused.iter().all(|&g| g == 0.0));
    }
}
