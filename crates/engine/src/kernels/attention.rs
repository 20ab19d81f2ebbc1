//! Causal grouped-query attention with online-softmax style bookkeeping: the forward pass
//! saves only the output and each row's log-sum-exp, and the backward pass recomputes the
//! probabilities from them (flash-attention style). Memory is O(T) scratch per task, never
//! a [T, T] matrix per head: query blocks of 64 rows meet their visible keys through GEMM.
//!
//! Layouts: q and out are `[B*T, H*hd]`, k and v `[B*T, KV*hd]` (heads side by side in a
//! row, as the projections write them), lse `[B, H, T]`. Query head h reads kv head
//! h / (H / KV). Work is split into one task per (batch, kv head), which owns every output
//! element it writes, so there are no races and no order-dependent sums.

use super::{dot, SharedMut};
use crate::gemm::sgemm;
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

/// Query rows per block: scores of one block against all earlier keys are `BLOCK x T` floats.
const BLOCK: usize = 64;

pub fn forward(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: Shape) {
    let (qw, kw, hd, t_len) = (s.q_width(), s.kv_width(), s.head_dim, s.seq);
    assert!(out.len() >= s.batch * t_len * qw && lse.len() >= s.batch * s.n_heads * t_len);
    assert!(
        q.len() >= s.batch * t_len * qw
            && k.len() >= s.batch * t_len * kw
            && v.len() >= s.batch * t_len * kw
    );
    let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let scale = s.scale();
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let base = b * t_len;
            let kb = &k[base * kw + kvh * hd..];
            let vb = &v[base * kw + kvh * hd..];
            let mut scores = vec![0.0f32; BLOCK * t_len];
            for h in kvh * s.group()..(kvh + 1) * s.group() {
                for i0 in (0..t_len).step_by(BLOCK) {
                    let rows = BLOCK.min(t_len - i0);
                    let keys = i0 + rows; // causal: block rows see keys 0..keys
                    let qb = &q[(base + i0) * qw + h * hd..];
                    let sc = &mut scores[..rows * keys];
                    sgemm(
                        false, true, rows, keys, hd, scale, qb, qw, kb, kw, 0.0, sc, keys,
                    );
                    let mut inv = [0.0f32; BLOCK];
                    for (r, row) in sc.chunks_mut(keys).enumerate() {
                        let visible = i0 + r + 1;
                        let (live, masked) = row.split_at_mut(visible);
                        masked.fill(0.0);
                        let max = super::simd::max(live);
                        let sum = super::simd::exp_sub_sum(live, max);
                        inv[r] = 1.0 / sum;
                        // SAFETY: lse[b, h, i0 + r] belongs to this task (b and h are its own).
                        unsafe {
                            *lse_p.get().add((b * s.n_heads + h) * t_len + i0 + r) = max + sum.ln()
                        };
                    }
                    // SAFETY: rows base+i0.. of head h's columns belong to this task; the view
                    // spans (rows-1)*qw + hd elements, inside `out` (asserted above).
                    let ob = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_p.get().add((base + i0) * qw + h * hd),
                            (rows - 1) * qw + hd,
                        )
                    };
                    sgemm(
                        false, false, rows, hd, keys, 1.0, sc, keys, vb, kw, 0.0, ob, qw,
                    );
                    for r in 0..rows {
                        super::simd::scale(&mut ob[r * qw..r * qw + hd], inv[r]);
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
    assert!(dout.len() >= s.batch * t_len * qw && out.len() >= s.batch * t_len * qw);
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
            let kv_off = base * kw + kvh * hd;
            let kv_span = (t_len - 1) * kw + hd;
            let (kb, vb) = (&k[kv_off..], &v[kv_off..]);
            // SAFETY: this task owns dk/dv rows base..base+T in the columns of kv head kvh; the
            // views span exactly those rows (other columns in between are not written).
            let dkb = unsafe { std::slice::from_raw_parts_mut(dk_p.get().add(kv_off), kv_span) };
            let dvb = unsafe { std::slice::from_raw_parts_mut(dv_p.get().add(kv_off), kv_span) };
            for j in 0..t_len {
                dkb[j * kw..j * kw + hd].fill(0.0);
                dvb[j * kw..j * kw + hd].fill(0.0);
            }
            let mut p = vec![0.0f32; BLOCK * t_len];
            let mut dp = vec![0.0f32; BLOCK * t_len];
            for h in kvh * s.group()..(kvh + 1) * s.group() {
                for i0 in (0..t_len).step_by(BLOCK) {
                    let rows = BLOCK.min(t_len - i0);
                    let keys = i0 + rows;
                    let q_off = (base + i0) * qw + h * hd;
                    let (qb, dob) = (&q[q_off..], &dout[q_off..]);
                    let pb = &mut p[..rows * keys];
                    let dpb = &mut dp[..rows * keys];
                    sgemm(
                        false, true, rows, keys, hd, scale, qb, qw, kb, kw, 0.0, pb, keys,
                    );
                    sgemm(
                        false, true, rows, keys, hd, 1.0, dob, qw, vb, kw, 0.0, dpb, keys,
                    );
                    for (r, (prow, dprow)) in
                        pb.chunks_mut(keys).zip(dpb.chunks_mut(keys)).enumerate()
                    {
                        let i = i0 + r;
                        let l = lse[(b * s.n_heads + h) * t_len + i];
                        let o = q_off + r * qw;
                        let d_i = dot(&dout[o..o + hd], &out[o..o + hd]);
                        let (live, masked) = prow.split_at_mut(i + 1);
                        masked.fill(0.0);
                        super::simd::exp_sub_sum(live, l);
                        // dS = P * (dP - D) * scale, written over dP.
                        for (ds, pr) in dprow.iter_mut().zip(prow.iter()) {
                            *ds = pr * (*ds - d_i) * scale;
                        }
                    }
                    // SAFETY: dq rows base+i0.. in head h's columns belong to this task.
                    let dqb = unsafe {
                        std::slice::from_raw_parts_mut(dq_p.get().add(q_off), (rows - 1) * qw + hd)
                    };
                    sgemm(
                        false, false, rows, hd, keys, 1.0, dpb, keys, kb, kw, 0.0, dqb, qw,
                    );
                    sgemm(
                        true, false, keys, hd, rows, 1.0, dpb, keys, qb, qw, 1.0, dkb, kw,
                    );
                    sgemm(
                        true, false, keys, hd, rows, 1.0, pb, keys, dob, qw, 1.0, dvb, kw,
                    );
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

    #[test]
    fn multi_block_sequences_match_naive_and_finite_differences() {
        let s = Shape {
            batch: 1,
            seq: 2 * BLOCK + 7,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
        };
        let nq = s.batch * s.seq * s.q_width();
        let nk = s.batch * s.seq * s.kv_width();
        let mut q = randn(nq, 5, 1.0);
        let k = randn(nk, 6, 1.0);
        let v = randn(nk, 7, 1.0);
        let g = randn(nq, 8, 1.0);
        let mut out = vec![0.0; nq];
        let mut lse = vec![0.0; s.n_heads * s.seq];
        forward(&mut out, &mut lse, &q, &k, &v, s);
        for (a, b) in out.iter().zip(&naive(&q, &k, &v, s)) {
            assert!((a - b).abs() < 1e-5);
        }
        let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
        backward(&mut dq, &mut dk, &mut dv, &g, &q, &k, &v, &out, &lse, s);
        let coords: Vec<usize> = (0..nq).step_by(29).collect();
        let (mut num, mut den) = (0.0, 0.0);
        for &i in &coords {
            let old = q[i];
            q[i] = old + 1e-2;
            let up = weighted_sum(&naive(&q, &k, &v, s), &g);
            q[i] = old - 1e-2;
            let down = weighted_sum(&naive(&q, &k, &v, s), &g);
            q[i] = old;
            let fd = (up - down) / 2e-2;
            num += (dq[i] as f64 - fd).powi(2);
            den += fd * fd;
        }
        assert!((num / den).sqrt() < 1e-3);
    }
}
