//! Causal grouped-query attention with online-softmax style bookkeeping: the forward pass
//! saves only the output and each row's log-sum-exp, and the backward pass recomputes the
//! probabilities from them (flash-attention style). Memory is O(T) scratch per task, never
//! a [T, T] matrix per head: query blocks of 64 rows meet their visible keys through GEMM.
//!
//! Layouts: q and out are `[B*T, H*hd]`, k and v `[B*T, KV*hd]` (heads side by side in a
//! row, as the projections write them), lse `[B, H, T]`. Query head h reads kv head
//! h / (H / KV). Work is split into one task per (batch, kv head), which owns every output
//! element it writes, so there are no races and no order-dependent sums. The query heads of a
//! task share its K and V, so their rows are stacked and meet K and V in one GEMM per block
//! (SmolLM2's 3 heads per kv head: attention 7% faster than one GEMM per head).

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

/// Forward passes of heads up to this size use `small` (rows against transposed K and V):
/// with so few columns a GEMM call costs more in packing than in arithmetic. The backward
/// pass keeps the GEMM blocks (a row version of it measured slower).
const SMALL_HEAD: usize = 16;

pub fn forward(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: Shape) {
    let (qw, kw, hd, t_len) = (s.q_width(), s.kv_width(), s.head_dim, s.seq);
    assert!(out.len() >= s.batch * t_len * qw && lse.len() >= s.batch * s.n_heads * t_len);
    assert!(
        q.len() >= s.batch * t_len * qw
            && k.len() >= s.batch * t_len * kw
            && v.len() >= s.batch * t_len * kw
    );
    if hd <= SMALL_HEAD {
        return small::forward(out, lse, q, k, v, s);
    }
    let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let (scale, group) = (s.scale(), s.group());
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let (base, h0) = (b * t_len, kvh * group);
            let kb = &k[base * kw + kvh * hd..];
            let vb = &v[base * kw + kvh * hd..];
            let mut scores = vec![0.0f32; group * BLOCK * t_len];
            let mut qg = vec![0.0f32; group * BLOCK * hd];
            let mut og = vec![0.0f32; group * BLOCK * hd];
            let mut inv = vec![0.0f32; group * BLOCK];
            for i0 in (0..t_len).step_by(BLOCK) {
                let (rows, keys, m, at, stack) = query_block(s, base, h0, i0);
                let (qs, ldq) = stack.view(&mut qg, &q[at..]);
                let sc = &mut scores[..m * keys];
                sgemm(
                    false, true, m, keys, hd, scale, qs, ldq, kb, kw, 0.0, sc, keys,
                );
                for (row, (srow, inv)) in sc.chunks_mut(keys).zip(inv.iter_mut()).enumerate() {
                    let (g, r) = (row / rows, row % rows);
                    let (max, sum) = softmax_row(srow, i0 + r + 1, 0.0, false);
                    *inv = 1.0 / sum;
                    // SAFETY: lse[b, h, i0 + r] belongs to this task (b and h are its own).
                    unsafe {
                        *lse_p.get().add((b * s.n_heads + h0 + g) * t_len + i0 + r) = max + sum.ln()
                    };
                }
                // SAFETY: rows base+i0.. of the group's head columns belong to this task; the
                // view spans (rows-1)*qw + group*hd elements, inside `out` (asserted above).
                let ob = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_p.get().add(at),
                        (rows - 1) * qw + group * hd,
                    )
                };
                if group == 1 {
                    sgemm(
                        false, false, m, hd, keys, 1.0, sc, keys, vb, kw, 0.0, ob, qw,
                    );
                    for (r, a) in inv[..rows].iter().enumerate() {
                        super::simd::scale(&mut ob[r * qw..r * qw + hd], *a);
                    }
                } else {
                    sgemm(
                        false, false, m, hd, keys, 1.0, sc, keys, vb, kw, 0.0, &mut og, hd,
                    );
                    stack.scatter_scaled(ob, &og[..m * hd], &inv);
                }
            }
        });
}

/// Block `i0..i0 + rows` of the query rows of a (batch, kv head) task whose rows start at
/// `base` and whose first query head is `h0`: (rows, keys it sees (causal: 0..keys), stacked
/// rows group * rows, offset in q / out / dout of its first row in head h0, its `Stack`).
fn query_block(s: Shape, base: usize, h0: usize, i0: usize) -> (usize, usize, usize, usize, Stack) {
    let rows = BLOCK.min(s.seq - i0);
    let stack = Stack {
        rows,
        group: s.group(),
        hd: s.head_dim,
        width: s.q_width(),
    };
    let at = (base + i0) * s.q_width() + h0 * s.head_dim;
    (rows, i0 + rows, s.group() * rows, at, stack)
}

/// The query rows of one block for all query heads of a kv head, stacked into one matrix
/// `[group * rows, hd]` (row `g * rows + r` = head g of the group at block row r) so that
/// the whole group meets its shared K and V in one GEMM each, not one per head.
/// With one head per group the rows are used in place (no copy).
#[derive(Clone, Copy)]
struct Stack {
    rows: usize,
    group: usize,
    hd: usize,
    /// Row stride of the source / destination (all heads side by side).
    width: usize,
}

impl Stack {
    /// The stacked rows of `src` (which starts at the group's first head, block row 0) and
    /// their row stride: `src` itself for a single head, else a copy in `buf`.
    fn view<'a>(&self, buf: &'a mut [f32], src: &'a [f32]) -> (&'a [f32], usize) {
        if self.group == 1 {
            return (src, self.width);
        }
        let stacked = &mut buf[..self.group * self.rows * self.hd];
        for (i, d) in stacked.chunks_exact_mut(self.hd).enumerate() {
            let (g, r) = (i / self.rows, i % self.rows);
            let at = r * self.width + g * self.hd;
            d.copy_from_slice(&src[at..at + self.hd]);
        }
        (stacked, self.hd)
    }

    /// Un-stacks `src` into `dst`, multiplying stacked row i by `scale[i]`.
    fn scatter_scaled(&self, dst: &mut [f32], src: &[f32], scale: &[f32]) {
        for (i, (x, a)) in src.chunks_exact(self.hd).zip(scale).enumerate() {
            let (g, r) = (i / self.rows, i % self.rows);
            let at = r * self.width + g * self.hd;
            for (d, x) in dst[at..at + self.hd].iter_mut().zip(x) {
                *d = x * a;
            }
        }
    }

    /// Un-stacks `src` into `dst`.
    fn scatter(&self, dst: &mut [f32], src: &[f32]) {
        for (i, x) in src.chunks_exact(self.hd).enumerate() {
            let (g, r) = (i / self.rows, i % self.rows);
            let at = r * self.width + g * self.hd;
            dst[at..at + self.hd].copy_from_slice(x);
        }
    }
}

/// row[..live] = exp(row[..live] - m) and 0 beyond, with m = the row's max (forward) or the
/// given `shift` (backward, the saved log-sum-exp); returns (m, sum). The vector loop runs
/// over `live` rounded up to 16 when the row is long enough, so that the tail is not scalar.
fn softmax_row(row: &mut [f32], live: usize, shift: f32, fixed_shift: bool) -> (f32, f32) {
    let padded = live.next_multiple_of(16);
    if padded <= row.len() {
        row[padded..].fill(0.0);
        let part = &mut row[..padded];
        let m = if fixed_shift {
            shift
        } else {
            super::simd::max_padded(part, live)
        };
        (m, super::simd::exp_sub_sum_padded(part, live, m))
    } else {
        let (part, masked) = row.split_at_mut(live);
        masked.fill(0.0);
        let m = if fixed_shift {
            shift
        } else {
            super::simd::max(part)
        };
        (m, super::simd::exp_sub_sum(part, m))
    }
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
    let (scale, group) = (s.scale(), s.group());
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let (base, h0) = (b * t_len, kvh * group);
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
            let mut p = vec![0.0f32; group * BLOCK * t_len];
            let mut dp = vec![0.0f32; group * BLOCK * t_len];
            let mut qg = vec![0.0f32; group * BLOCK * hd];
            let mut dog = vec![0.0f32; group * BLOCK * hd];
            let mut dqg = vec![0.0f32; group * BLOCK * hd];
            for i0 in (0..t_len).step_by(BLOCK) {
                let (rows, keys, m, at, stack) = query_block(s, base, h0, i0);
                let (qs, ldq) = stack.view(&mut qg, &q[at..]);
                let (dos, lddo) = stack.view(&mut dog, &dout[at..]);
                let pb = &mut p[..m * keys];
                let dpb = &mut dp[..m * keys];
                sgemm(
                    false, true, m, keys, hd, scale, qs, ldq, kb, kw, 0.0, pb, keys,
                );
                sgemm(
                    false, true, m, keys, hd, 1.0, dos, lddo, vb, kw, 0.0, dpb, keys,
                );
                for (row, (prow, dprow)) in
                    pb.chunks_mut(keys).zip(dpb.chunks_mut(keys)).enumerate()
                {
                    let (g, r) = (row / rows, row % rows);
                    let i = i0 + r;
                    let l = lse[(b * s.n_heads + h0 + g) * t_len + i];
                    let o = at + r * qw + g * hd;
                    let d_i = dot(&dout[o..o + hd], &out[o..o + hd]);
                    softmax_row(prow, i + 1, l, true);
                    // dS = P * (dP - D) * scale, written over dP.
                    for (ds, pr) in dprow.iter_mut().zip(prow.iter()) {
                        *ds = pr * (*ds - d_i) * scale;
                    }
                }
                // SAFETY: dq rows base+i0.. in the group's head columns belong to this task.
                let dqb = unsafe {
                    std::slice::from_raw_parts_mut(dq_p.get().add(at), (rows - 1) * qw + group * hd)
                };
                if group == 1 {
                    sgemm(
                        false, false, m, hd, keys, 1.0, dpb, keys, kb, kw, 0.0, dqb, qw,
                    );
                } else {
                    sgemm(
                        false, false, m, hd, keys, 1.0, dpb, keys, kb, kw, 0.0, &mut dqg, hd,
                    );
                    stack.scatter(dqb, &dqg[..m * hd]);
                }
                sgemm(
                    true, false, keys, hd, m, 1.0, dpb, keys, qs, ldq, 1.0, dkb, kw,
                );
                sgemm(
                    true, false, keys, hd, m, 1.0, pb, keys, dos, lddo, 1.0, dvb, kw,
                );
            }
        });
}

/// Forward attention for small heads: per (batch, kv head) task, K and V are transposed once
/// into `[hd, Tp]` (Tp = T rounded up to 16, zero padded), and blocks of 4 query rows compute
/// their scores, softmax and output with 16-wide row kernels (fused multiply-adds: the same
/// correctly rounded result on every instruction set). Rows are padded to a multiple of 16
/// columns; the padding gets probability 0, so it adds nothing to any sum.
// Index loops over fixed-size lanes are what the vectoriser turns into SIMD registers.
#[allow(clippy::needless_range_loop)]
mod small {
    use super::super::simd::{exp_sub_sum_masked, max_masked, multiversion};
    use super::super::SharedMut;
    use super::Shape;
    use rayon::prelude::*;

    /// dst[d * tp + j] = src[j * ld + d] for j < rows, d < hd.
    fn transpose_in(dst: &mut [f32], src: &[f32], rows: usize, ld: usize, hd: usize, tp: usize) {
        for j in 0..rows {
            for (d, x) in src[j * ld..j * ld + hd].iter().enumerate() {
                dst[d * tp + j] = *x;
            }
        }
    }

    /// q * scale (q has at most 16 elements).
    #[inline(always)]
    fn scaled(q: &[f32], scale: f32) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        for (o, x) in out.iter_mut().zip(q) {
            *o = x * scale;
        }
        out
    }

    /// Which batch row a task handles, and the transposed K and V (of its kv head) it reads.
    #[derive(Clone, Copy)]
    struct Task<'a> {
        s: Shape,
        b: usize,
        /// Padded row length of the transposed buffers.
        tp: usize,
        kt: &'a [f32],
        vt: &'a [f32],
    }

    /// Query rows handled together: they share every load of K^T and V^T, and their sums
    /// are independent chains the CPU can overlap.
    const R: usize = 4;

    /// The (head, row) pairs of a task in the order they are processed: row by row, the
    /// group's heads side by side, so that neighbours see about as many keys.
    fn items(s: &Shape, kvh: usize) -> Vec<(usize, usize)> {
        let heads = kvh * s.group()..(kvh + 1) * s.group();
        (0..s.seq)
            .flat_map(|i| heads.clone().map(move |h| (h, i)))
            .collect()
    }

    /// scores[r][j] = sum_d x[r][d] * t[d * tp + j] for j < lp (a multiple of 16).
    #[inline(always)]
    fn rows_times_t<const N: usize>(
        scores: &mut [f32],
        x: &[[f32; 16]; N],
        hd: usize,
        t: &[f32],
        tp: usize,
        lp: usize,
    ) {
        assert!(scores.len() >= N * tp && hd * tp <= t.len() && lp <= tp && hd <= 16);
        for j0 in (0..lp).step_by(16) {
            let mut acc = [[0.0f32; 16]; N];
            for d in 0..hd {
                // SAFETY: d * tp + j0 + 16 <= hd * tp <= t.len() (asserted; j0 + 16 <= lp <= tp).
                let tr = unsafe { &*(t.as_ptr().add(d * tp + j0) as *const [f32; 16]) };
                for r in 0..N {
                    for i in 0..16 {
                        acc[r][i] = x[r][d].mul_add(tr[i], acc[r][i]);
                    }
                }
            }
            for r in 0..N {
                scores[r * tp + j0..r * tp + j0 + 16].copy_from_slice(&acc[r]);
            }
        }
    }

    /// out[r][d] = sum_j p[r][j] * t[d * tp + j] over j < lp (a multiple of 16).
    #[inline(always)]
    fn rows_dot_t<const N: usize>(
        out: &mut [[f32; 16]; N],
        p: &[f32],
        hd: usize,
        t: &[f32],
        tp: usize,
        lp: usize,
    ) {
        assert!(p.len() >= N * tp && hd * tp <= t.len() && lp <= tp && hd <= 16);
        for d in 0..hd {
            let mut acc = [[0.0f32; 16]; N];
            for j0 in (0..lp).step_by(16) {
                // SAFETY: as in rows_times_t.
                let tr = unsafe { &*(t.as_ptr().add(d * tp + j0) as *const [f32; 16]) };
                for r in 0..N {
                    // SAFETY: r * tp + j0 + 16 <= N * tp <= p.len().
                    let pr = unsafe { &*(p.as_ptr().add(r * tp + j0) as *const [f32; 16]) };
                    for i in 0..16 {
                        acc[r][i] = pr[i].mul_add(tr[i], acc[r][i]);
                    }
                }
            }
            let acc = std::hint::black_box(acc);
            for r in 0..N {
                out[r][d] = hsum(&acc[r]);
            }
        }
    }

    #[inline(always)]
    fn hsum(acc: &[f32; 16]) -> f32 {
        let mut s8 = [0.0f32; 8];
        for i in 0..8 {
            s8[i] = acc[i] + acc[i + 8];
        }
        let s4 = [s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]];
        (s4[0] + s4[2]) + (s4[1] + s4[3])
    }

    /// Forward of N (head, row) items of one task.
    #[inline(always)]
    fn forward_block<const N: usize>(
        t: &Task<'_>,
        block: &[(usize, usize)],
        p: &mut [f32],
        q: &[f32],
        out_p: SharedMut,
        lse_p: SharedMut,
    ) {
        let s = t.s;
        let (qw, hd, t_len, tp) = (s.q_width(), s.head_dim, s.seq, t.tp);
        let scale = s.scale();
        let base = t.b * t_len;
        let mut qs = [[0.0f32; 16]; N];
        let mut live = [0usize; N];
        for r in 0..N {
            let (h, i) = block[r];
            let q_off = (base + i) * qw + h * hd;
            qs[r] = scaled(&q[q_off..q_off + hd], scale);
            live[r] = i + 1; // causal: row i sees keys 0..=i
        }
        let lp = live.iter().max().map_or(0, |l| l.next_multiple_of(16));
        rows_times_t(p, &qs, hd, t.kt, tp, lp);
        let mut stats = [(0.0f32, 0.0f32); N];
        for r in 0..N {
            let pr = &mut p[r * tp..r * tp + lp];
            let max = max_masked(pr, live[r]);
            stats[r] = (max, exp_sub_sum_masked(pr, live[r], max));
        }
        let mut o = [[0.0f32; 16]; N];
        rows_dot_t(&mut o, p, hd, t.vt, tp, lp);
        for r in 0..N {
            let (h, i) = block[r];
            let (max, sum) = stats[r];
            let inv = 1.0 / sum;
            // SAFETY: row base+i of head h's columns and lse[b, h, i] belong to this task
            // (b and h are its own); both lie inside the sizes `forward` asserted.
            unsafe {
                let dst = out_p.get().add((base + i) * qw + h * hd);
                for d in 0..hd {
                    *dst.add(d) = o[r][d] * inv;
                }
                *lse_p.get().add((t.b * s.n_heads + h) * t_len + i) = max + sum.ln();
            }
        }
    }

    multiversion! {
        /// Forward of every (head, row) item of one task: out and lse through raw pointers
        /// (the rows and heads of this task only).
        fn forward_rows(t: Task<'_>, items: &[(usize, usize)], p: &mut [f32], q: &[f32], out_p: SharedMut, lse_p: SharedMut) {
            let mut blocks = items.chunks_exact(R);
            for block in &mut blocks {
                forward_block::<R>(&t, block, p, q, out_p, lse_p);
            }
            for item in blocks.remainder() {
                forward_block::<1>(&t, std::slice::from_ref(item), p, q, out_p, lse_p);
            }
        }
    }

    pub(super) fn forward(
        out: &mut [f32],
        lse: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: Shape,
    ) {
        let (kw, hd, t_len) = (s.kv_width(), s.head_dim, s.seq);
        let tp = t_len.next_multiple_of(16);
        let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
        (0..s.batch * s.n_kv_heads)
            .into_par_iter()
            .for_each(|task| {
                let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
                let off = b * t_len * kw + kvh * hd;
                let mut kt = vec![0.0f32; hd * tp];
                let mut vt = vec![0.0f32; hd * tp];
                transpose_in(&mut kt, &k[off..], t_len, kw, hd, tp);
                transpose_in(&mut vt, &v[off..], t_len, kw, hd, tp);
                let mut p = vec![0.0f32; R * tp];
                let t = Task {
                    s,
                    b,
                    tp,
                    kt: &kt,
                    vt: &vt,
                };
                forward_rows(t, &items(&s, kvh), &mut p, q, out_p, lse_p);
            });
    }
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
    fn both_forward_paths_match_naive() {
        // head_dim 20 takes the GEMM blocks, 4 the small-head rows; 70 rows span two blocks
        // and leave row lengths that are not multiples of 16.
        for head_dim in [SMALL_HEAD + 4, 4] {
            let s = Shape {
                batch: 2,
                seq: BLOCK + 6,
                n_heads: 3,
                n_kv_heads: 1,
                head_dim,
            };
            let nq = s.batch * s.seq * s.q_width();
            let nk = s.batch * s.seq * s.kv_width();
            let (q, k, v) = (randn(nq, 11, 1.0), randn(nk, 12, 1.0), randn(nk, 13, 1.0));
            let mut out = vec![0.0; nq];
            let mut lse = vec![0.0; s.batch * s.n_heads * s.seq];
            forward(&mut out, &mut lse, &q, &k, &v, s);
            for (a, b) in out.iter().zip(&naive(&q, &k, &v, s)) {
                assert!((a - b).abs() < 1e-5, "head_dim {head_dim}: {a} vs {b}");
            }
        }
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

    /// The GEMM forward (its saved lse included) and the backward with three query heads
    /// stacked per kv head, over two blocks, against finite differences of q, k and v.
    #[test]
    fn stacked_heads_match_finite_differences() {
        let s = Shape {
            batch: 1,
            seq: BLOCK + 6,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: SMALL_HEAD + 4,
        };
        let nq = s.batch * s.seq * s.q_width();
        let nk = s.batch * s.seq * s.kv_width();
        let mut x = [randn(nq, 21, 1.0), randn(nk, 22, 1.0), randn(nk, 23, 1.0)];
        let g = randn(nq, 24, 1.0);
        let mut out = vec![0.0; nq];
        let mut lse = vec![0.0; s.n_heads * s.seq];
        forward(&mut out, &mut lse, &x[0], &x[1], &x[2], s);
        for (a, b) in out.iter().zip(&naive(&x[0], &x[1], &x[2], s)) {
            assert!((a - b).abs() < 1e-5);
        }
        let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
        backward(
            &mut dq, &mut dk, &mut dv, &g, &x[0], &x[1], &x[2], &out, &lse, s,
        );
        for (which, grad) in [&dq, &dk, &dv].into_iter().enumerate() {
            let (mut num, mut den) = (0.0, 0.0);
            for i in (0..x[which].len()).step_by(37) {
                let old = x[which][i];
                x[which][i] = old + 1e-2;
                let up = weighted_sum(&naive(&x[0], &x[1], &x[2], s), &g);
                x[which][i] = old - 1e-2;
                let down = weighted_sum(&naive(&x[0], &x[1], &x[2], s), &g);
                x[which][i] = old;
                let fd = (up - down) / 2e-2;
                num += (grad[i] as f64 - fd).powi(2);
                den += fd * fd;
            }
            assert!((num / den).sqrt() < 1e-3, "input {which}");
        }
    }
}
