//! Causal attention of a whole prompt chunk at once, as two small GEMMs per head and block of
//! query rows (`S = Q Kᵀ / √d`, then `O = softmax(S) V`), instead of one dot product per
//! (row, head, position): those short dots, each through a dispatch, were about an eighth of
//! a 128-token SmolLM2 prefill.

use super::kv::KvStore;
use crate::config::ModelConfig;
use std::borrow::Cow;

/// Query rows per task: the GEMMs stay efficient and the causal triangle wastes little.
const ROW_BLOCK: usize = 32;

/// `out[r]` = attention of query row `q[r]` (position `start + r`, every head) over cached
/// keys/values `0..=start + r`, for `n` rows; `q` and `out` are `[n, dim]`, the caches hold
/// at least `start + n` positions. Query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
pub(crate) fn attend_rows(
    q: &[f32],
    out: &mut [f32],
    k_cache: &KvStore,
    v_cache: &KvStore,
    start: usize,
    cfg: &ModelConfig,
) {
    let (d, hd, kv_dim) = (cfg.dim, cfg.head_dim(), cfg.kv_dim());
    let n = q.len() / d;
    assert_eq!(out.len(), n * d, "attention: out is not [n, dim]");
    let len = start + n;
    let (keys, values) = (
        k_cache.f32_prefix(len * kv_dim),
        v_cache.f32_prefix(len * kv_dim),
    );
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let blocks = n.div_ceil(ROW_BLOCK);
    let out_addr = out.as_mut_ptr() as usize;
    crate::team::for_each_index(cfg.n_heads * blocks, |task| {
        let (h, b) = (task / blocks, task % blocks);
        let r0 = b * ROW_BLOCK;
        let rows = ROW_BLOCK.min(n - r0);
        // Row r0 + i sees positions 0..=start + r0 + i.
        let cols = start + r0 + rows;
        let koff = (h / group) * hd;
        let mut scores = vec![0f32; rows * cols];
        // SAFETY: every operand lies inside its buffer: q rows r0..r0+rows at head h
        // (q is [n, d]); keys/values positions 0..cols <= len at kv head h / group; scores is
        // [rows, cols]. The destination is rows r0..r0+rows, columns h*hd..(h+1)*hd of out,
        // written by this task only.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                hd,
                scores.as_mut_ptr(),
                1,
                cols as isize,
                false,
                q.as_ptr().add(r0 * d + h * hd),
                1,
                d as isize,
                keys.as_ptr().add(koff),
                kv_dim as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, row) in scores.chunks_exact_mut(cols).enumerate() {
            let seen = start + r0 + i + 1;
            super::kernels::softmax(&mut row[..seen]);
            row[seen..].fill(0.0);
        }
        // SAFETY: as above.
        unsafe {
            gemm::gemm(
                rows,
                hd,
                cols,
                (out_addr as *mut f32).add(r0 * d + h * hd),
                1,
                d as isize,
                false,
                scores.as_ptr(),
                1,
                cols as isize,
                values.as_ptr().add(koff),
                1,
                kv_dim as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

impl KvStore {
    /// Elements `0..len` as f32: borrowed from an f32 cache, widened once otherwise.
    pub(crate) fn f32_prefix(&self, len: usize) -> Cow<'_, [f32]> {
        match self {
            KvStore::F32(v) => Cow::Borrowed(&v[..len]),
            _ => {
                let mut wide = vec![0f32; len];
                self.read(0, &mut wide);
                Cow::Owned(wide)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::infer::decode_attention::attend_one;
    use crate::infer::kv::KvType;

    /// `n` deterministic values in [-1, 1) (an LCG), for the attention tests.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every row equals the decode path (one row, split softmax) within f32 rounding
    /// of sums over at most `hd` and `len` terms, for GQA shapes, chunks that start past
    /// cached positions, row counts across block edges, and every cache type.
    #[test]
    fn batched_rows_equal_the_row_by_row_attention() {
        for (heads, kv_heads, hd) in [(4, 2, 16), (9, 3, 64), (3, 3, 8)] {
            let cfg = ModelConfig {
                dim: heads * hd,
                n_heads: heads,
                n_kv_heads: kv_heads,
                ..ModelConfig::preset("tiny").unwrap()
            };
            let (d, kv_dim) = (cfg.dim, cfg.kv_dim());
            for kind in [KvType::F32, KvType::F16, KvType::BF16] {
                for (start, n) in [(0, 1), (0, 45), (7, 32), (70, 33)] {
                    let len = start + n;
                    let mut k = KvStore::new(kind, len * kv_dim);
                    let mut v = KvStore::new(kind, len * kv_dim);
                    k.write(0, &values(len * kv_dim, 1));
                    v.write(0, &values(len * kv_dim, 2));
                    let q = values(n * d, 3 + start as u32);
                    let mut got = vec![f32::NAN; n * d];
                    attend_rows(&q, &mut got, &k, &v, start, &cfg);
                    for r in 0..n {
                        let mut want = vec![0f32; d];
                        attend_one(
                            &q[r * d..(r + 1) * d],
                            &mut want,
                            &k,
                            &v,
                            start + r + 1,
                            &cfg,
                            false,
                        );
                        for (g, w) in got[r * d..(r + 1) * d].iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= 1e-5,
                                "{heads}/{kv_heads} heads, {kind:?}, start {start}, row {r}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
