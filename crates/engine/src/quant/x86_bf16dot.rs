//! Prefill product for BF16 weight rows on AVX-512 BF16 (`vdpbf16ps`): the activations are
//! rounded to BF16 once per product (nearest, ties to even), then every output is a dot
//! product of two BF16 rows with f32 accumulation, two multiply-adds per lane and
//! instruction — twice what the widen-to-f32 GEMM gets from the same registers.
//!
//! Accuracy: the weights are exact; each activation carries a relative rounding error of at
//! most 2⁻⁸, so `|c − c_f32| ≤ 2⁻⁸ · Σ|x·w|` plus f32 summation error (the kernel test states
//! the bound). An output depends only on its two rows (the same lane-wise order of the
//! `k` steps whatever the tile or thread), so results do not change with the thread count.

use std::arch::x86_64::*;

/// Activation rows per tile (each held in a register across the tile's weight rows).
const TILE_M: usize = 4;
/// Weight rows per tile: 4 × 4 accumulators. 4 × 6 spilled accumulators to the stack (Zen 5
/// BF16 prefill 1284–1327 tok/s against 1417–1434 for 4 × 4; 4 × 5: 643–1185).
const TILE_N: usize = 4;

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

/// One `RM × RN` tile: `c[i, j] = xb[i] · w[j]` for `RM` rows of `xb` (BF16, stride `k`) and
/// `RN` rows of `w` (BF16 bytes, stride `2k`), written at `c + i * ldc + j`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed so the accumulators stay in registers
unsafe fn tile<const RM: usize, const RN: usize>(
    xb: *const u16,
    w: *const u8,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let mut i = 0;
    while i < k {
        let mut xs = [_mm512_setzero_si512(); RM];
        for (r, v) in xs.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(xb.add(r * k + i) as *const _);
        }
        for j in 0..RN {
            let wv = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                w.add(2 * (j * k + i)) as *const _,
            ));
            for r in 0..RM {
                let xr = std::mem::transmute::<__m512i, __m512bh>(xs[r]);
                acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xr, wv);
            }
        }
        i += 32;
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            *c.add(r * ldc + j) = _mm512_reduce_add_ps(*a);
        }
    }
}

/// A tile of any size up to `TILE_M × TILE_N` (the edges of the product).
#[inline(always)]
unsafe fn tile_any(
    rm: usize,
    rn: usize,
    xb: *const u16,
    w: *const u8,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    macro_rules! by_n {
        ($rm:literal) => {
            match rn {
                1 => tile::<$rm, 1>(xb, w, k, c, ldc),
                2 => tile::<$rm, 2>(xb, w, k, c, ldc),
                3 => tile::<$rm, 3>(xb, w, k, c, ldc),
                4 => tile::<$rm, 4>(xb, w, k, c, ldc),
                5 => tile::<$rm, 5>(xb, w, k, c, ldc),
                _ => tile::<$rm, 6>(xb, w, k, c, ldc),
            }
        };
    }
    match rm {
        1 => by_n!(1),
        2 => by_n!(2),
        3 => by_n!(3),
        _ => by_n!(4),
    }
}

/// Columns `cols` of `c[m, n] = xb[m, k] · wᵀ`, with `xb` the BF16 activations and `w` the
/// BF16 bytes of all `n` weight rows; `c` points at the whole `[m, n]` output.
///
/// # Safety
/// The CPU must have AVX-512 F and BF16 ([`available`]); `k % 32 == 0`, `xb.len() == m * k`,
/// `w.len() == 2 * n * k`, `cols.end <= n`, and `c` valid for `[m, n]` with no other writer
/// of columns `cols` while this runs.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn matmul_bt_columns(
    xb: &[u16],
    w: &[u8],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    cols: std::ops::Range<usize>,
) {
    let j1 = cols.end;
    assert!(k.is_multiple_of(32) && xb.len() == m * k && w.len() == 2 * n * k && j1 <= n);
    let mut j = cols.start;
    while j < j1 {
        let rn = TILE_N.min(j1 - j);
        // The tile's weight rows stay in L1 while every activation row passes.
        let wj = w.as_ptr().add(2 * j * k);
        let mut i = 0;
        while i < m {
            let rm = TILE_M.min(m - i);
            if rm == TILE_M && rn == TILE_N {
                tile::<TILE_M, TILE_N>(xb.as_ptr().add(i * k), wj, k, c.add(i * n + j), n);
            } else {
                tile_any(rm, rn, xb.as_ptr().add(i * k), wj, k, c.add(i * n + j), n);
            }
            i += rm;
        }
        j += rn;
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
        for &(m, n, k) in &[
            (1, 1, 32),
            (5, 7, 64),
            (4, 6, 96),
            (9, 13, 576),
            (13, 25, 160),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let wf: Vec<f32> = (0..n * k)
                .map(|_| half::bf16::from_f32(next()).to_f32())
                .collect();
            let w = bf16_bytes(&wf);
            let mut xb = vec![0u16; m * k];
            let mut c = vec![f32::NAN; m * n];
            // SAFETY: available() checked; shapes as required; one writer.
            unsafe {
                round_to_bf16(&x, &mut xb);
                matmul_bt_columns(&xb, &w, m, n, k, c.as_mut_ptr(), 0..n / 2);
                matmul_bt_columns(&xb, &w, m, n, k, c.as_mut_ptr(), n / 2..n);
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
