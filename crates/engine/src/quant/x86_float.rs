//! SIMD kernels for F32 / F16 / BF16 weight rows against f32 activations (inference only):
//! the decode matrix-vector product (one row per pass, two independent accumulators; AVX2
//! also prefetches the next row's 16-bit weights), and the widening of rows into f32 panels
//! for the prefill GEMM. `KIND`: 0 = F32, 1 = F16 (`vcvtph2ps`), 2 = BF16 (the 16 bits shifted
//! into the top of an f32).
//!
//! Every row's sum is formed the same way whatever the number of rows per pass, so results do
//! not depend on how rows are split into tasks.

use std::arch::x86_64::*;

/// Rows per pass of the AVX2 kernel: one. On an AVX2-only Zen 3, one sequential stream per
/// thread reached 68–79 % of the read bandwidth in decode where four interleaved rows reached
/// 48–67 % (SmolLM2 F16 58 against 44 tok/s; see docs/performance-generate.md).
const ROWS_AVX2: usize = 1;

/// Bytes per element of `KIND`.
const fn elem_bytes(kind: u8) -> usize {
    if kind == 0 {
        4
    } else {
        2
    }
}

/// 16 weights from `p` (element `i` on) as f32.
#[inline(always)]
unsafe fn load16<const KIND: u8>(p: *const u8, i: usize) -> __m512 {
    match KIND {
        0 => _mm512_loadu_ps(p.add(4 * i) as *const f32),
        1 => _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i) as *const __m256i)),
        _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
            _mm256_loadu_si256(p.add(2 * i) as *const __m256i),
        ))),
    }
}

/// Like [`load16`] for the lanes of `m` only (zero elsewhere; masked lanes are not read).
#[inline(always)]
unsafe fn load16_mask<const KIND: u8>(p: *const u8, i: usize, m: __mmask16) -> __m512 {
    match KIND {
        0 => _mm512_maskz_loadu_ps(m, p.add(4 * i) as *const f32),
        1 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16)),
        _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
            _mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16),
        ))),
    }
}

/// One row at `p` · `x`: two accumulators (even and odd 16-lane steps), the last `< 32`
/// columns through masked loads. One sequential stream per thread and no software prefetch:
/// on Zen 4 that decoded SmolLM2 F16 / BF16 / F32 at 85–101 / 94–101 / 49–54 tok/s where four
/// interleaved rows with prefetch of the next four reached 52–62 / 55–56 / 35–40 (the
/// hardware prefetcher follows one stream per core best; docs/performance-generate.md).
#[inline(always)]
unsafe fn row512<const KIND: u8>(p: *const u8, x: &[f32]) -> f32 {
    let k = x.len();
    let xp = x.as_ptr();
    let body = k / 32 * 32;
    let rest = k - body;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i < body {
        a0 = _mm512_fmadd_ps(load16::<KIND>(p, i), _mm512_loadu_ps(xp.add(i)), a0);
        a1 = _mm512_fmadd_ps(
            load16::<KIND>(p, i + 16),
            _mm512_loadu_ps(xp.add(i + 16)),
            a1,
        );
        i += 32;
    }
    if rest > 0 {
        let m0: __mmask16 = ((1u32 << rest.min(16)) - 1) as __mmask16;
        let m1: __mmask16 = ((1u32 << rest.saturating_sub(16)) - 1) as __mmask16;
        let x0 = _mm512_maskz_loadu_ps(m0, xp.add(body));
        let x1 = _mm512_maskz_loadu_ps(m1, xp.add(body + 16));
        a0 = _mm512_fmadd_ps(load16_mask::<KIND>(p, body, m0), x0, a0);
        a1 = _mm512_fmadd_ps(load16_mask::<KIND>(p, body + 16, m1), x1, a1);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
}

/// `out[r] = row r of w · x`, `w` `[out.len(), x.len()]` row-major elements of `KIND`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn matvec512<const KIND: u8>(w: &[u8], x: &[f32], out: &mut [f32]) {
    let rb = x.len() * elem_bytes(KIND);
    assert_eq!(
        w.len(),
        out.len() * rb,
        "matvec: matrix is not [rows, cols]"
    );
    let wp = w.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        *o = row512::<KIND>(wp.add(r * rb), x);
    }
}

/// 8 weights from `p` (element `i` on) as f32.
#[inline(always)]
pub(super) unsafe fn load8<const KIND: u8>(p: *const u8, i: usize) -> __m256 {
    match KIND {
        0 => _mm256_loadu_ps(p.add(4 * i) as *const f32),
        1 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i)),
        _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
            _mm_loadu_si128(p.add(2 * i) as *const __m128i),
        ))),
    }
}

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// The AVX2 form of [`row512`] for `R` rows (row `j` at `p + j * rb`), prefetching the same
/// offsets `R` rows further on (F16 / BF16): 8-lane steps, the last `< 16` columns through zero-padded
/// stack copies.
#[inline(always)]
unsafe fn rows256<const R: usize, const KIND: u8>(
    p: *const u8,
    rb: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let k = x.len();
    let eb = elem_bytes(KIND);
    let xp = x.as_ptr();
    let body = k / 16 * 16;
    let rest = k - body;
    let ahead = R * rb;
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i < body {
        let x0 = _mm256_loadu_ps(xp.add(i));
        let x1 = _mm256_loadu_ps(xp.add(i + 8));
        for j in 0..R {
            let pj = p.add(j * rb);
            // F32 rows stream fastest on the hardware prefetcher alone (measured, as above).
            if KIND != 0 && (i * eb).is_multiple_of(64) {
                _mm_prefetch::<_MM_HINT_T0>(pj.wrapping_add(ahead + i * eb) as *const i8);
            }
            a0[j] = _mm256_fmadd_ps(load8::<KIND>(pj, i), x0, a0[j]);
            a1[j] = _mm256_fmadd_ps(load8::<KIND>(pj, i + 8), x1, a1[j]);
        }
        i += 16;
    }
    if rest > 0 {
        let mut xt = [0f32; 16];
        xt[..rest].copy_from_slice(&x[body..]);
        let x0 = _mm256_loadu_ps(xt.as_ptr());
        let x1 = _mm256_loadu_ps(xt.as_ptr().add(8));
        for j in 0..R {
            let mut wt = [0u8; 64];
            std::ptr::copy_nonoverlapping(p.add(j * rb + body * eb), wt.as_mut_ptr(), rest * eb);
            a0[j] = _mm256_fmadd_ps(load8::<KIND>(wt.as_ptr(), 0), x0, a0[j]);
            a1[j] = _mm256_fmadd_ps(load8::<KIND>(wt.as_ptr(), 8), x1, a1[j]);
        }
    }
    for j in 0..R {
        out[j] = hsum256(_mm256_add_ps(a0[j], a1[j]));
    }
}

/// [`matvec512`] on AVX2, [`ROWS_AVX2`] rows per pass.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec256<const KIND: u8>(w: &[u8], x: &[f32], out: &mut [f32]) {
    let rb = x.len() * elem_bytes(KIND);
    assert_eq!(
        w.len(),
        out.len() * rb,
        "matvec: matrix is not [rows, cols]"
    );
    let wp = w.as_ptr();
    let mut r = 0;
    while r + ROWS_AVX2 <= out.len() {
        rows256::<ROWS_AVX2, KIND>(wp.add(r * rb), rb, x, &mut out[r..r + ROWS_AVX2]);
        r += ROWS_AVX2;
    }
    while r < out.len() {
        rows256::<1, KIND>(wp.add(r * rb), rb, x, &mut out[r..r + 1]);
        r += 1;
    }
}
