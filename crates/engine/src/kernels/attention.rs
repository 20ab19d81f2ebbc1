//! Causal grouped-query attention with online-softmax style bookkeeping: the forward pass
//! saves only the output and each row's log-sum-exp, and the backward pass recomputes the
//! probabilities from them (flash-attention style). Memory is O(T) scratch per task, never
//! a [T, T] matrix per head.
//!
//! Layouts: q and out are `[B*T, H*hd]`, k and v `[B*T, KV*hd]` (heads side by side in a
//! row, as the projections write them), lse `[B, H, T]`. Query head h reads kv head
//! h / (H / KV). Work is split into one task per (batch, kv head), which owns every output
//! element it writes, so there are no races and no order-dependent sums.

use super::{axpy, dot, SharedMut};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Shape {
    fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Fills `scores[..=i]` with the scaled dot products of query row `qi` with keys 0..=i and
/// returns their maximum.
#[allow(clippy::too_many_arguments)]
fn scores_row(
    scores: &mut [f32],
    qi: &[f32],
    k: &[f32],
    base: usize,
    kw: usize,
    off: usize,
    hd: usize,
    i: usize,
    scale: f32,
) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores[..=i].iter_mut().enumerate() {
        let kj = &k[(base + j) * kw + off..(base + j) * kw + off + hd];
        *s = dot(qi, kj) * scale;
        max = max.max(*s);
    }
    max
}

pub fn forward(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: Shape) {
    let (qw, kw, hd, t_len) = (s.q_width(), s.kv_width(), s.head_dim, s.seq);
    let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    assert!(out.len() >= s.batch * t_len * qw && lse.len() >= s.batch * s.n_heads * t_len);
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let base = b * t_len;
            let mut scores = vec![0.0f32; t_len];
            let mut acc = vec![0.0f32; hd];
            for h in kvh * s.group()..(kvh + 1) * s.group() {
                for i in 0..t_len {
                    let qi = &q[(base + i) * qw + h * hd..(base + i) * qw + (h + 1) * hd];
                    let max = scores_row(&mut scores, qi, k, base, kw, kvh * hd, hd, i, s.scale());
                    let mut sum = 0.0f32;
                    acc.fill(0.0);
                    for (j, sc) in scores[..=i].iter_mut().enumerate() {
                        let p = (*sc - max).exp();
                        sum += p;
                        let vj = &v[(base + j) * kw + kvh * hd..(base + j) * kw + (kvh + 1) * hd];
                        axpy(&mut acc, p, vj);
                    }
                    let inv = 1.0 / sum;
                    // SAFETY: row (base+i), columns of head h, and lse[b, h, i] belong to this
                    // task only (h belongs to kv head kvh, b to this task); bounds asserted above.
                    unsafe {
                        let o = std::slice::from_raw_parts_mut(
                            out_p.get().add((base + i) * qw + h * hd),
                            hd,
                        );
                        for (o, a) in o.iter_mut().zip(&acc) {
                            *o = a * inv;
                        }
                        *lse_p.get().add((b * s.n_heads + h) * t_len + i) = max + sum.ln();
                    }
                }
            }
        });
}

/// Writes dq, dk and dv (overwriting) from dout, given the forward inputs, output and lse.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    s: Shape,
) {
    let (qw, kw, hd, t_len) = (s.q_width(), s.kv_width(), s.head_dim, s.seq);
    assert!(
        dq.len() >= s.batch * t_len * qw
            && dk.len() >= s.batch * t_len * kw
            && dv.len() >= s.batch * t_len * kw
    );
    let (dq_p, dk_p, dv_p) = (
        SharedMut(dq.as_mut_ptr()),
        SharedMut(dk.as_mut_ptr()),
        SharedMut(dv.as_mut_ptr()),
    );
    let scale = s.scale();
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let base = b * t_len;
            let kv_row = |j: usize| (base + j) * kw + kvh * hd;
            // SAFETY (all raw slices below): this task owns dk/dv rows base..base+T in the
            // columns of kv head kvh, and dq rows base..base+T in the columns of its query heads.
            let row_mut = |p: SharedMut, off: usize| unsafe {
                std::slice::from_raw_parts_mut(p.get().add(off), hd)
            };
            for j in 0..t_len {
                row_mut(dk_p, kv_row(j)).fill(0.0);
                row_mut(dv_p, kv_row(j)).fill(0.0);
            }
            let mut p = vec![0.0f32; t_len];
            for h in kvh * s.group()..(kvh + 1) * s.group() {
                for i in 0..t_len {
                    let q_off = (base + i) * qw + h * hd;
                    let qi = &q[q_off..q_off + hd];
                    let doi = &dout[q_off..q_off + hd];
                    let d_i = dot(doi, &out[q_off..q_off + hd]);
                    let l = lse[(b * s.n_heads + h) * t_len + i];
                    scores_row(&mut p, qi, k, base, kw, kvh * hd, hd, i, scale);
                    let dqi = row_mut(dq_p, q_off);
                    dqi.fill(0.0);
                    for (j, pj) in p[..=i].iter_mut().enumerate() {
                        let prob = (*pj - l).exp();
                        let vj = &v[kv_row(j)..kv_row(j) + hd];
                        let ds = prob * (dot(doi, vj) - d_i) * scale;
                        axpy(dqi, ds, &k[kv_row(j)..kv_row(j) + hd]);
                        axpy(row_mut(dk_p, kv_row(j)), ds, qi);
                        axpy(row_mut(dv_p, kv_row(j)), prob, doi);
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gradcheck::*;

    fn naive(q: &[f32], k: &[f32], v: &[f32], s: Shape) -> Vec<f32> {
        let (qw, kw, hd) = (s.q_width(), s.kv_width(), s.head_dim);
        let mut out = vec![0.0; s.batch * s.seq * qw];
        for b in 0..s.batch {
            for h in 0..s.n_heads {
                let kvh = h / s.group();
                for i in 0..s.seq {
                    let qi = &q[(b * s.seq + i) * qw + h * hd..][..hd];
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[(b * s.seq + j) * kw + kvh * hd..][..hd];
                            qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                * s.scale() as f64
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for (j, x) in sc.iter().enumerate() {
                        let p = ((x - m).exp() / z) as f32;
                        let vj = &v[(b * s.seq + j) * kw + kvh * hd..][..hd];
                        for d in 0..hd {
                            out[(b * s.seq + i) * qw + h * hd + d] += p * vj[d];
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn forward_matches_naive_and_backward_matches_finite_differences() {
        let s = Shape {
            batch: 2,
            seq: 5,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
        };
        let nq = s.batch * s.seq * s.q_width();
        let nk = s.batch * s.seq * s.kv_width();
        let mut q = randn(nq, 1, 1.0);
        let mut k = randn(nk, 2, 1.0);
        let mut v = randn(nk, 3, 1.0);
        let g = randn(nq, 4, 1.0);
        let mut out = vec![0.0; nq];
        let mut lse = vec![0.0; s.batch * s.n_heads * s.seq];
        forward(&mut out, &mut lse, &q, &k, &v, s);
        let reference = naive(&q, &k, &v, s);
        for (a, b) in out.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-5);
        }
        let (mut dq, mut dk, mut dv) = (vec![9.0; nq], vec![9.0; nk], vec![9.0; nk]);
        backward(&mut dq, &mut dk, &mut dv, &g, &q, &k, &v, &out, &lse, s);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| weighted_sum(&naive(q, k, v, s), &g);
        let (kc, vc) = (k.clone(), v.clone());
        let nq_ = numeric_grad(&mut q, 1e-2, |q| loss(q, &kc, &vc));
        let qc = q.clone();
        let nk_ = numeric_grad(&mut k, 1e-2, |k| loss(&qc, k, &vc));
        let kc = k.clone();
        let nv_ = numeric_grad(&mut v, 1e-2, |v| loss(&qc, &kc, v));
        assert!(rel_l2(&dq, &nq_) < 1e-3, "dq {}", rel_l2(&dq, &nq_));
        assert!(rel_l2(&dk, &nk_) < 1e-3, "dk {}", rel_l2(&dk, &nk_));
        assert!(rel_l2(&dv, &nv_) < 1e-3, "dv {}", rel_l2(&dv, &nv_));
    }
}
