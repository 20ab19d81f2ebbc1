//! AVX-512 VNNI versions of the interleaved group kernels ([`super::x86::dot_group16`] and
//! [`super::x86::dot_group32`]): the same integer block sums (exact, in any order) and the
//! same f32 operations in the same order per block, so results are bit-identical to AVX2.
//!
//! 16-bit activations (`vpdpwssd`, 512 bits): each 32-byte chunk (4 quant bytes of each of
//! the 8 rows) is reordered to bytes 0, 2, 1, 3 per row and widened to i16, so row `l` owns
//! the 32-bit lanes `2l, 2l + 1`, holding the weight pairs (0, 2) and (1, 3) that meet the
//! swizzled activation pairs of one broadcast 64-bit word. One reduction per block folds the
//! lane pairs back into the 8 rows.
//!
//! 8-bit activations (`vpdpbusd`, 256 bits): the AVX2 layout as is, `maddubs + madd + add`
//! fused into one instruction (256 bits keep the third vector port; a 512-bit form needs a
//! lane shuffle per product and measured no faster).

// Index loops over the activation rows read closer to the AVX2 kernels they mirror.
#![allow(clippy::needless_range_loop)]

use super::act::{BlockQ16, BlockQ8};
use super::x86::prefetch_ahead;
use std::arch::x86_64::*;

/// Bytes per block of `KIND` (0 = Q8_0, 1 = Q4_0, 2 = Q4_1).
const fn block_bytes(kind: u8) -> usize {
    match kind {
        0 => 34,
        1 => 18,
        _ => 20,
    }
}

/// Bytes 0, 2, 1, 3 of every 32-bit lane (a `vpshufb` control: per 128-bit lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn swap_mid_bytes(v: __m256i) -> __m256i {
    let ctl = _mm256_setr_epi8(
        0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15, 0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11,
        12, 14, 13, 15,
    );
    _mm256_shuffle_epi8(v, ctl)
}

/// Four swizzled i16 activations at `y + at` broadcast to every 64-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn quad(y: *const i16, at: usize) -> __m512i {
    // SAFETY: the caller keeps `at + 4 <= 32` inside one block.
    _mm512_set1_epi64(unsafe { (y.add(at) as *const i64).read_unaligned() })
}

/// Row `l`'s sum out of lanes `2l, 2l + 1`: the 8 i32 in row order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn fold_pairs(s: __m512i) -> __m256i {
    _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64(s, 32)))
}

/// The per-block f32 step shared with the AVX2 kernels: `acc += f32(sum) * (d * da)`, and
/// the Q4 minimum term (Q4_0: `-8 d s`, Q4_1: `m s`) into `accm`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scale_block<const KIND: u8>(
    sum: __m256i,
    d: __m256,
    m: __m256,
    da: f32,
    s: f32,
    acc: &mut __m256,
    accm: &mut __m256,
) {
    *acc = _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(sum),
        _mm256_mul_ps(d, _mm256_set1_ps(da)),
        *acc,
    );
    match KIND {
        1 => *accm = _mm256_fmadd_ps(m, _mm256_set1_ps(-8.0 * s), *accm),
        2 => *accm = _mm256_fmadd_ps(m, _mm256_set1_ps(s), *accm),
        _ => {}
    }
}

/// The 8 f16 scales at `p` and (Q4_1) the 8 minima after them, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scales<const KIND: u8>(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller passes the start of a group-block (16 or 32 scale bytes).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m = if KIND == 2 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            d
        };
        (d, m)
    }
}

/// [`super::x86::dot_group16`] with `vpdpwssd` on 512 bits: `out[j][l]` = row `l` of group
/// `g` · activation row `j`, bit-identical to the AVX2 kernel (exact i32 block sums, at most
/// 32 * 127 * 32767 < 2^31; the same f32 steps per block).
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_group16<const R: usize, const KIND: u8>(
    g: &[u8],
    a: [&[BlockQ16]; R],
) -> [[f32; 8]; R] {
    let gb = 8 * block_bytes(KIND);
    let nb = g.len() / gb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let m4 = _mm512_set1_epi16(0x0f);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: block `b < nb` of the group lies inside `g`, and block `b` of every
        // activation row exists (checked above); loads are unaligned.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ16; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut s0 = [_mm512_setzero_si512(); R];
            let mut s1 = [_mm512_setzero_si512(); R];
            if KIND == 0 {
                for c in 0..8 {
                    let v = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                    let w = _mm512_cvtepi8_epi16(swap_mid_bytes(v));
                    for r in 0..R {
                        let y = quad(ys[r].qs.as_ptr(), 4 * c);
                        // Two chains per row halve the dependent `vpdpwssd` latency.
                        if c % 2 == 0 {
                            s0[r] = _mm512_dpwssd_epi32(s0[r], w, y);
                        } else {
                            s1[r] = _mm512_dpwssd_epi32(s1[r], w, y);
                        }
                    }
                }
            } else {
                let off = if KIND == 2 { 32 } else { 16 };
                for c in 0..4 {
                    let v = _mm256_loadu_si256(p.add(off + 32 * c) as *const __m256i);
                    let w = _mm512_cvtepu8_epi16(swap_mid_bytes(v));
                    // Bytes < 256 widened to i16: the low nibble by mask, the high by shift.
                    let lo = _mm512_and_si512(w, m4);
                    let hi = _mm512_srli_epi16(w, 4);
                    for r in 0..R {
                        let q = ys[r].qs.as_ptr();
                        s0[r] = _mm512_dpwssd_epi32(s0[r], lo, quad(q, 4 * c));
                        s1[r] = _mm512_dpwssd_epi32(s1[r], hi, quad(q, 16 + 4 * c));
                    }
                }
            }
            let (d, m) = scales::<KIND>(p);
            for r in 0..R {
                let sum = fold_pairs(_mm512_add_epi32(s0[r], s1[r]));
                scale_block::<KIND>(sum, d, m, ys[r].d, ys[r].s, &mut acc[r], &mut accm[r]);
            }
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        // SAFETY: `out[r]` holds 8 f32.
        unsafe { _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], accm[r])) };
    }
    out
}

/// The 4 activation bytes at `y + at` broadcast to every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn word(y: *const i8, at: usize) -> __m256i {
    // SAFETY: the caller keeps `at + 4 <= 32` inside one block.
    _mm256_set1_epi32(unsafe { (y.add(at) as *const i32).read_unaligned() })
}

/// [`super::x86::dot_group32`] with `vpdpbusd`: unsigned weight bytes (Q4 nibbles, or |w|
/// for Q8_0 with the sign moved onto the activation) times signed activation bytes, four
/// products per 32-bit lane summed exactly into i32. Bit-identical to the AVX2 kernel.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_group32<const R: usize, const KIND: u8>(
    g: &[u8],
    a: [&[BlockQ8]; R],
) -> [[f32; 8]; R] {
    let gb = 8 * block_bytes(KIND);
    let nb = g.len() / gb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: as in `dot_group16`.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ8; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut s0 = [_mm256_setzero_si256(); R];
            let mut s1 = [_mm256_setzero_si256(); R];
            if KIND == 0 {
                for c in 0..8 {
                    let w = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                    // |w| as u8 (-128 -> 128) times sign(y, w): exactly w * y.
                    let aw = _mm256_sign_epi8(w, w);
                    for r in 0..R {
                        let y = _mm256_sign_epi8(word(ys[r].qs.as_ptr(), 4 * c), w);
                        if c % 2 == 0 {
                            s0[r] = _mm256_dpbusd_epi32(s0[r], aw, y);
                        } else {
                            s1[r] = _mm256_dpbusd_epi32(s1[r], aw, y);
                        }
                    }
                }
            } else {
                let off = if KIND == 2 { 32 } else { 16 };
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(p.add(off + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(raw, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    for r in 0..R {
                        let q = ys[r].qs.as_ptr();
                        s0[r] = _mm256_dpbusd_epi32(s0[r], lo, word(q, 4 * c));
                        s1[r] = _mm256_dpbusd_epi32(s1[r], hi, word(q, 16 + 4 * c));
                    }
                }
            }
            let (d, m) = scales::<KIND>(p);
            for r in 0..R {
                let sum = _mm256_add_epi32(s0[r], s1[r]);
                // Q4_1's minimum meets the f16 sum term (llama.cpp's Q8_1), Q4_0's offset the f32 one.
                let s = if KIND == 2 { ys[r].sm } else { ys[r].s };
                scale_block::<KIND>(sum, d, m, ys[r].d, s, &mut acc[r], &mut accm[r]);
            }
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        // SAFETY: `out[r]` holds 8 f32.
        unsafe { _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], accm[r])) };
    }
    out
}
