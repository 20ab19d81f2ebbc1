//! Causal attention of the one query row of a decode step, split into tasks of (kv head,
//! chunk of positions) that run in parallel, each with its own softmax maximum, and merged
//! afterwards (the split-softmax of flash decoding).
//!
//! The query heads that share a kv head (GQA) meet each chunk of keys and values while it
//! is in L1, scores and the weighted sum of values are whole-chunk loops compiled per
//! instruction-set level, and an f16/bf16 cache is widened once per chunk. The row-by-row
//! form before it (one dispatched 64-term dot per position and head) took a quarter of a
//! SmolLM2 Q4_1 decode step at 150 positions on an AVX2 machine.
//!
//! The chunks depend only on the number of positions, so the result does not depend on the
//! thread count or on which thread ran which task.

use super::kv::KvStore;
use crate::config::ModelConfig;
use crate::kernels::simd::{self, multiversion};

/// Positions per task: enough tasks to balance two or more threads from ~64 positions on,
/// few enough that the merge stays negligible.
const CHUNK: usize = 32;

/// One task's result for each of its query heads: the chunk's largest score `m`, the sum
/// `l` of `exp(score - m)`, and the values weighted by those exponentials (`hd` floats).
fn partial_len(hd: usize) -> usize {
    hd + 2
}

/// `out` (every head) = softmax(q·Kᵀ/√hd)·V over cached positions `0..len`. Query head `h`
/// reads kv head `h / (n_heads / n_kv_heads)`. With `parallel`, tasks go to the decode team.
pub(crate) fn attend_one(
    q: &[f32],
    out: &mut [f32],
    k_cache: &KvStore,
    v_cache: &KvStore,
    len: usize,
    cfg: &ModelConfig,
    parallel: bool,
) {
    let hd = cfg.head_dim();
    let group = cfg.n_heads / cfg.n_kv_heads;
    assert!(len > 0, "attention over no positions");
    assert_eq!(q.len(), cfg.n_heads * hd, "attention: q is not one row");
    assert_eq!(out.len(), q.len(), "attention: out is not one row");
    let chunks = len.div_ceil(CHUNK);
    let slab = group * partial_len(hd);
    let mut partials = vec![0f32; cfg.n_kv_heads * chunks * slab];
    let mut tasks: Vec<(usize, &mut [f32])> = partials.chunks_mut(slab).enumerate().collect();
    let run = |task: &mut (usize, &mut [f32])| {
        let (g, c) = (task.0 / chunks, task.0 % chunks);
        let t0 = c * CHUNK;
        let t1 = (t0 + CHUNK).min(len);
        chunk_task(q, k_cache, v_cache, cfg, g, t0..t1, task.1);
    };
    if parallel {
        // The decode team, not rayon: mixing the two pools would oversubscribe the cores.
        crate::team::for_each_mut(&mut tasks, run);
    } else {
        tasks.iter_mut().for_each(run);
    }
    for (h, o) in out.chunks_exact_mut(hd).enumerate() {
        let (g, j) = (h / group, h % group);
        let part = |c: usize| {
            let at = (g * chunks + c) * slab + j * partial_len(hd);
            &partials[at..at + partial_len(hd)]
        };
        merge(o, (0..chunks).map(part));
    }
}

/// The partials of one kv head `g` over positions `ts`, for each of its query heads, into
/// `slab` (`group` partials of [`partial_len`] floats).
fn chunk_task(
    q: &[f32],
    k_cache: &KvStore,
    v_cache: &KvStore,
    cfg: &ModelConfig,
    g: usize,
    ts: std::ops::Range<usize>,
    slab: &mut [f32],
) {
    let hd = cfg.head_dim();
    let kv_dim = cfg.kv_dim();
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let n = ts.len();
    let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
    let (keys, kstride) = rows(k_cache, ts.clone(), g * hd, hd, kv_dim, &mut kbuf);
    let (values, vstride) = rows(v_cache, ts, g * hd, hd, kv_dim, &mut vbuf);
    let mut scores = [0f32; CHUNK];
    let scores = &mut scores[..n];
    for (j, part) in slab.chunks_exact_mut(partial_len(hd)).enumerate() {
        let h = g * group + j;
        scores_of(&q[h * hd..(h + 1) * hd], keys, kstride, scale, scores);
        let m = simd::max(scores);
        let l = simd::exp_sub_sum(scores, m);
        part[0] = m;
        part[1] = l;
        weighted_sum(scores, values, vstride, &mut part[2..]);
    }
}

/// Rows `ts` of one head (`hd` values at offset `off` in rows of `kv_dim`) as f32: the cache
/// itself for an f32 cache (row stride `kv_dim`), else widened into `buf` (stride `hd`).
fn rows<'a>(
    store: &'a KvStore,
    ts: std::ops::Range<usize>,
    off: usize,
    hd: usize,
    kv_dim: usize,
    buf: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let first = ts.start * kv_dim + off;
    if let KvStore::F32(v) = store {
        let end = (ts.end - 1) * kv_dim + off + hd;
        return (&v[first..end], kv_dim);
    }
    buf.resize(ts.len() * hd, 0.0);
    for (i, row) in buf.chunks_exact_mut(hd).enumerate() {
        store.read(first + i * kv_dim, row);
    }
    (buf, hd)
}

multiversion! {
    /// `scores[t] = (q · keys[t * stride..][..q.len()]) * scale`, 8 independent partial sums
    /// per dot (a fixed order on every CPU).
    fn scores_of(q: &[f32], keys: &[f32], stride: usize, scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        for (t, s) in scores.iter_mut().enumerate() {
            let k = &keys[t * stride..t * stride + hd];
            let mut acc = [0f32; 8];
            let mut qc = q.chunks_exact(8);
            let mut kc = k.chunks_exact(8);
            for (x, y) in (&mut qc).zip(&mut kc) {
                for i in 0..8 {
                    acc[i] += x[i] * y[i];
                }
            }
            let mut tail = 0f32;
            for (x, y) in qc.remainder().iter().zip(kc.remainder()) {
                tail += x * y;
            }
            let s4 = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
            *s = ((s4[0] + s4[2]) + (s4[1] + s4[3]) + tail) * scale;
        }
    }
}

multiversion! {
    /// `out = Σ_t p[t] · values[t * stride..][..out.len()]`.
    fn weighted_sum(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
        let hd = out.len();
        out.fill(0.0);
        for (t, &pt) in p.iter().enumerate() {
            let v = &values[t * stride..t * stride + hd];
            for (o, &x) in out.iter_mut().zip(v) {
                *o += pt * x;
            }
        }
    }
}

/// One head's output from its chunks' partials: every chunk rescaled to the largest maximum,
/// then the weighted values divided by the summed weights.
fn merge<'a>(out: &mut [f32], parts: impl Iterator<Item = &'a [f32]> + Clone) {
    let m = parts.clone().fold(f32::NEG_INFINITY, |m, p| m.max(p[0]));
    out.fill(0.0);
    let mut l = 0f32;
    for p in parts {
        let w = simd::fast_exp(p[0] - m);
        l += w * p[1];
        for (o, &x) in out.iter_mut().zip(&p[2..]) {
            *o += w * x;
        }
    }
    let inv = 1.0 / l;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::kv::KvType;
    use crate::infer::prefill_attention::tests::values;

    /// softmax(q·Kᵀ/√hd)·V in f64 from the values the cache holds.
    fn reference(q: &[f32], k: &KvStore, v: &KvStore, len: usize, cfg: &ModelConfig) -> Vec<f64> {
        let (hd, kv_dim) = (cfg.head_dim(), cfg.kv_dim());
        let group = cfg.n_heads / cfg.n_kv_heads;
        let mut tmp = vec![0f32; hd];
        let mut out = vec![0f64; q.len()];
        for h in 0..cfg.n_heads {
            let off = (h / group) * hd;
            let s: Vec<f64> = (0..len)
                .map(|t| {
                    let kt = k.read(t * kv_dim + off, &mut tmp);
                    let d: f64 = (0..hd).map(|i| q[h * hd + i] as f64 * kt[i] as f64).sum();
                    d / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let l: f64 = e.iter().sum();
            for (t, et) in e.iter().enumerate() {
                let vt = v.read(t * kv_dim + off, &mut tmp);
                for i in 0..hd {
                    out[h * hd + i] += et / l * vt[i] as f64;
                }
            }
        }
        out
    }

    /// Every head equals the f64 softmax of the cached values within 2e-6 (outputs are
    /// convex combinations of values in [-1, 1]; f32 rounding of ~hd- and len-term sums), for
    /// GQA shapes, head sizes off the vector width, lengths across chunk edges, every cache
    /// type, and serial and parallel runs (which must agree bit for bit).
    #[test]
    fn decode_attention_equals_the_f64_softmax() {
        for (heads, kv_heads, hd) in [(4, 2, 16), (9, 3, 64), (3, 3, 12), (2, 1, 128)] {
            let cfg = ModelConfig {
                dim: heads * hd,
                n_heads: heads,
                n_kv_heads: kv_heads,
                ..ModelConfig::preset("tiny").unwrap()
            };
            let kv_dim = cfg.kv_dim();
            for kind in [KvType::F32, KvType::F16, KvType::BF16] {
                for len in [1, 5, 32, 33, 64, 100, 257] {
                    let mut k = KvStore::new(kind, len * kv_dim);
                    let mut v = KvStore::new(kind, len * kv_dim);
                    k.write(0, &values(len * kv_dim, 1));
                    // Large scores too: the chunks' maxima must be merged, not assumed equal.
                    let q: Vec<f32> = values(cfg.dim, 7 + len as u32)
                        .iter()
                        .map(|x| x * 6.0)
                        .collect();
                    v.write(0, &values(len * kv_dim, 2));
                    let want = reference(&q, &k, &v, len, &cfg);
                    let mut serial = vec![f32::NAN; cfg.dim];
                    attend_one(&q, &mut serial, &k, &v, len, &cfg, false);
                    let mut parallel = vec![f32::NAN; cfg.dim];
                    attend_one(&q, &mut parallel, &k, &v, len, &cfg, true);
                    assert_eq!(
                        serial, parallel,
                        "{heads}/{kv_heads}x{hd} {kind:?} len {len}"
                    );
                    for (i, (g, w)) in serial.iter().zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() <= 2e-6,
                            "{heads}/{kv_heads}x{hd} {kind:?} len {len} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
