//! Prefill product for BF16 weight rows on AVX-512 BF16 (`vdpbf16ps`): the activations are
//! rounded to BF16 once per product (nearest, ties to even); 16 weight rows at a time are
//! packed into a depth-major strip of 32-bit pairs (`[depth / 2][16]`: lane `r` holds row
//! `r`'s two BF16 values at depths `2p, 2p + 1`, the layout of [`super::x86_strip`] with BF16
//! pairs for f32 values), and tiles of 12 activation rows × 2 strips run one `vdpbf16ps` per
//! activation row and strip, the row's pair broadcast to every lane: two multiply-adds per
//! lane and instruction, no horizontal sums, 24 accumulators. On Zen 4 that ran SmolLM2's
//! BF16 layer at 193–198 GFLOP/s on one core against 173–176 for the former 4 × 4 tiles of
//! row-by-row dot products (which summed lanes at the end of every output).
//!
//! Accuracy: the weights are exact; each activation carries a relative rounding error of at
//! most 2⁻⁸, so `|c − c_f32| ≤ 2⁻⁸ · Σ|x·w|` plus f32 summation error (the kernel test states
//! the bound). Each output is the sum of its pair products in depth order, depth blocks added
//! in turn, so it depends only on the shapes, never on the thread, piece or tile.

use super::x86_strip::{store_pair, widen_strip, TileOut};
use std::arch::x86_64::*;

/// Weight rows per strip: one register of pairs.
pub const STRIP: usize = 16;
/// Activation rows per tile.
pub(super) const ROWS: usize = 12;
/// Depth values per block (128 pairs: an 8 KiB strip).
pub(super) const DEPTH_BLOCK: usize = 256;
/// Strips per packed panel.
const PANEL_STRIPS: usize = 16;

/// Whether the CPU has AVX-512 F and BF16 (checked once).
pub fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    })
}

/// `x` (f32, length a multiple of 32) rounded to BF16 into `dst` (same length).
///
/// # Safety
/// The CPU must have AVX-512 F and BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn round_to_bf16(x: &[f32], dst: &mut [u16]) {
    assert!(x.len() == dst.len() && x.len().is_multiple_of(32));
    for (src, out) in x.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
        let lo = _mm512_loadu_ps(src.as_ptr());
        let hi = _mm512_loadu_ps(src.as_ptr().add(16));
        // cvtne2ps puts its second operand in the low half.
        let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr() as *mut _, v);
    }
}

/// 32-bit words of panel scratch [`matmul_bt_columns`] needs for depth `k`.
pub fn panel_len(k: usize) -> usize {
    PANEL_STRIPS * DEPTH_BLOCK.min(k) / 2 * STRIP
}

#[inline(always)]
unsafe fn bh(v: __m512i) -> __m512bh {
    std::mem::transmute::<__m512i, __m512bh>(v)
}

/// `RM` activation rows (BF16 at `xb`, stride `ldx` values) against the one or two strips at
/// `strip` (`block` words apart; the second read only when `cols > 16`) over `pairs` pairs;
/// the `cols` results of each row stored at `c + i * ldc` (or added, `add`).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(super) unsafe fn tile<const RM: usize>(
    xb: *const u16,
    ldx: usize,
    strip: *const u32,
    block: usize,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    let mut a0 = [_mm512_setzero_ps(); RM];
    let mut a1 = [_mm512_setzero_ps(); RM];
    let xr: [*const u16; RM] = std::array::from_fn(|i| xb.add(i * ldx));
    let bcast = |i: usize, q: usize| {
        bh(_mm512_set1_epi32(
            (xr[i].add(2 * q) as *const i32).read_unaligned(),
        ))
    };
    if cols > STRIP {
        let s1 = strip.add(block);
        for q in 0..pairs {
            let b0 = bh(_mm512_loadu_si512(strip.add(q * STRIP) as *const _));
            let b1 = bh(_mm512_loadu_si512(s1.add(q * STRIP) as *const _));
            for i in 0..RM {
                let a = bcast(i, q);
                a0[i] = _mm512_dpbf16_ps(a0[i], a, b0);
                a1[i] = _mm512_dpbf16_ps(a1[i], a, b1);
            }
        }
    } else {
        for q in 0..pairs {
            let b0 = bh(_mm512_loadu_si512(strip.add(q * STRIP) as *const _));
            for i in 0..RM {
                a0[i] = _mm512_dpbf16_ps(a0[i], bcast(i, q), b0);
            }
        }
    }
    store_pair(&a0, &a1, TileOut { c, ldc, cols, add });
}

/// Columns `cols` of `c[m, n] = xb[m, k] · wᵀ`, with `xb` the BF16 activations and `w` the
/// BF16 bytes of all `n` weight rows; `c` points at the whole `[m, n]` output. `panel` is
/// scratch of at least [`panel_len`] words.
///
/// # Safety
/// The CPU must have AVX2, FMA and AVX-512 F and BF16; `k % 32 == 0`, `xb.len() == m * k`,
/// `w.len() == 2 * n * k`, `cols.end <= n`, and `c` valid for `[m, n]` with no other writer
/// of columns `cols` while this runs.
#[target_feature(enable = "avx2,fma,avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bt_columns(
    xb: &[u16],
    w: &[u8],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    cols: std::ops::Range<usize>,
    panel: &mut [u32],
) {
    assert!(k.is_multiple_of(32) && xb.len() == m * k && w.len() == 2 * n * k && cols.end <= n);
    assert!(panel.len() >= panel_len(k));
    let rb = 2 * k;
    let block = DEPTH_BLOCK.min(k) / 2 * STRIP;
    let mut j0 = cols.start;
    while j0 < cols.end {
        let j1 = (j0 + PANEL_STRIPS * STRIP).min(cols.end);
        let mut d0 = 0;
        while d0 < k {
            let depth = DEPTH_BLOCK.min(k - d0);
            for (s, j) in (j0..j1).step_by(STRIP).enumerate() {
                let rows = STRIP.min(j1 - j);
                // A pair of BF16 values is one 32-bit word: the f32 strip packing moves the
                // words of depths d0/2.. unchanged (plain loads and stores keep every bit).
                let strip = std::slice::from_raw_parts_mut(
                    panel.as_mut_ptr().add(s * block) as *mut f32,
                    block,
                );
                widen_strip::<0>(w.as_ptr().add(j * rb), rb, rows, d0 / 2, depth / 2, strip);
            }
            let mut i = 0;
            while i < m {
                let rm = ROWS.min(m - i);
                for (s, j) in (j0..j1).step_by(2 * STRIP).enumerate() {
                    let strip = panel.as_ptr().add(2 * s * block);
                    let (cij, cols) = (c.add(i * n + j), (2 * STRIP).min(j1 - j));
                    let x = xb.as_ptr().add(i * k + d0);
                    let add = d0 > 0;
                    macro_rules! rows {
                        ($($r:literal)*) => {
                            match rm {
                                $($r => tile::<$r>(x, k, strip, block, depth / 2, cij, n, cols, add),)*
                                _ => tile::<12>(x, k, strip, block, depth / 2, cij, n, cols, add),
                            }
                        };
                    }
                    rows!(1 2 3 4 5 6 7 8 9 10 11)
                }
                i += rm;
            }
            d0 += depth;
        }
        j0 = j1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_bytes(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&f| half::bf16::from_f32(f).to_le_bytes())
            .collect()
    }

    /// Every edge shape against the f32 product of the same BF16 weights, within the bound
    /// of the activations' BF16 rounding (2⁻⁸ relative each) plus f32 summation.
    #[test]
    fn matches_the_f32_product_within_the_activation_rounding() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        // Tails of every kind: 1..12 activation rows, single strips and pairs, short last
        // strips, several panels (> 256 rows) and depth blocks (> 256, a 32-deep last one).
        for &(m, n, k) in &[
            (1, 1, 32),
            (5, 7, 64),
            (4, 6, 96),
            (9, 13, 576),
            (13, 25, 160),
            (25, 47, 288),
            (12, 300, 1056),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let wf: Vec<f32> = (0..n * k)
                .map(|_| half::bf16::from_f32(next()).to_f32())
                .collect();
            let w = bf16_bytes(&wf);
            let mut xb = vec![0u16; m * k];
            let mut c = vec![f32::NAN; m * n];
            let mut panel = vec![0u32; panel_len(k)];
            // SAFETY: available() checked; shapes as required; one writer.
            unsafe {
                round_to_bf16(&x, &mut xb);
                let half = n / 2;
                matmul_bt_columns(&xb, &w, m, n, k, c.as_mut_ptr(), 0..half, &mut panel);
                matmul_bt_columns(&xb, &w, m, n, k, c.as_mut_ptr(), half..n, &mut panel);
            }
            for i in 0..m {
                for j in 0..n {
                    let (mut exact, mut abs) = (0f64, 0f64);
                    for t in 0..k {
                        let p = x[i * k + t] as f64 * wf[j * k + t] as f64;
                        exact += p;
                        abs += p.abs();
                    }
                    let bound = abs * (2f64.powi(-8) + k as f64 * 2f64.powi(-24));
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - exact).abs() <= bound,
                        "m={m} n={n} k={k} c[{i},{j}] = {got}, f64 {exact}, bound {bound}"
                    );
                }
            }
        }
    }
}
