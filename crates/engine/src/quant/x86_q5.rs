//! Q5_0 / Q5_1 group kernels (AVX2 and AVX-512 VNNI, 8- and 16-bit activations) over the
//! interleaved layout of [`super::packed`]: the Q4_0 / Q4_1 group kernels of [`super::x86`]
//! and [`super::x86_512`] with a fifth bit ORed into every nibble.
//!
//! The interleaved high bits of a row are regrouped ([`super::packed::q5_spread`]) so that
//! chunk `c`'s bits are bit `c` (low nibbles) and bit `4 + c` (high nibbles) of the byte they
//! extend: one shift and one mask per chunk give the bit at position 4, no per-bit expansion.
//! Values are unsigned (0..32); Q5_0's offset of 16 meets the activation block sum like
//! Q4_0's 8 (`-16 d s`), Q5_1's minimum like Q4_1's (`m s`).
//!
//! All four kernels share one f32 step per block ([`scale_block`]) and compute exact i32 block
//! sums, so AVX-512 results equal AVX2 results bit for bit, and a row's result does not
//! depend on how many activation rows (`R`) share the weight loads.

// Index loops over the activation rows read closer to the Q4 kernels they mirror.
#![allow(clippy::needless_range_loop)]

use super::act::{BlockQ16, BlockQ8};
use super::x86::{pair, prefetch_ahead, word};
use super::x86_512::{fold_pairs, quad, swap_mid_bytes};
use std::arch::x86_64::*;

/// (bytes per plain block, offset of the high bits, offset of the nibbles) of a group-block.
pub(super) const fn layout(one: bool) -> (usize, usize, usize) {
    if one {
        (24, 32, 64)
    } else {
        (22, 16, 48)
    }
}

/// The 32 five-bit bytes of one chunk: (values `4c..4c+4` of each row, values
/// `16+4c..16+4c+4`). `lo_bits` / `hi_bits` hold the chunk's fifth bits at bit 4 of each byte
/// (other bits are masked off here).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fives(raw: __m256i, lo_bits: __m256i, hi_bits: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let b4 = _mm256_set1_epi8(0x10);
    let lo = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(lo_bits, b4));
    let hi = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
        _mm256_and_si256(hi_bits, b4),
    );
    (lo, hi)
}

/// The high-bit sources of chunk 0 (bit 0 of each byte moved to bit 4; bit 4 as is); each
/// later chunk shifts both right by one ([`next_bits`]). The shifts stay inside each byte
/// for the bits that are kept.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn first_bits(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: the caller passes the 32 high-bit bytes of a group-block.
    let qh = unsafe { _mm256_loadu_si256(p as *const __m256i) };
    (_mm256_slli_epi16(qh, 4), qh)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn next_bits(b: (__m256i, __m256i)) -> (__m256i, __m256i) {
    (_mm256_srli_epi16(b.0, 1), _mm256_srli_epi16(b.1, 1))
}

/// The 8 f16 scales at `p` and (Q5_1) the 8 minima after them, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales<const ONE: bool>(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller passes the start of a group-block (16 or 32 scale bytes).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m = if ONE {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            d
        };
        (d, m)
    }
}

/// The per-block f32 step of every Q5 kernel (the Q4 kernels' step): `acc += f32(sum) *
/// (d * da)`, and the offset / minimum term (Q5_0: `-16 d s`, Q5_1: `m s`) into `accm`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_block<const ONE: bool>(
    sum: __m256i,
    (d, m): (__m256, __m256),
    (da, s): (f32, f32),
    acc: &mut __m256,
    accm: &mut __m256,
) {
    *acc = _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(sum),
        _mm256_mul_ps(d, _mm256_set1_ps(da)),
        *acc,
    );
    let s = if ONE { s } else { -16.0 * s };
    *accm = _mm256_fmadd_ps(m, _mm256_set1_ps(s), *accm);
}

/// Group-blocks of `g`, checked against the activation rows.
fn blocks<T>(g: &[u8], one: bool, a: &[&[T]]) -> usize {
    let nb = g.len() / (8 * layout(one).0);
    for ar in a {
        assert!(ar.len() >= nb, "Q5 group: activation row too short");
    }
    nb
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finish<const R: usize>(acc: [__m256; R], accm: [__m256; R]) -> [[f32; 8]; R] {
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        // SAFETY: `out[r]` holds 8 f32.
        unsafe { _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], accm[r])) };
    }
    out
}

/// The 8 rows of one interleaved Q5_0 (`ONE = false`) or Q5_1 group times `R` 8-bit
/// activation rows (`maddubs`; two chunks per i16 sum: 4 products of at most 2 * 31 * 127 =
/// 7874 each, <= 31496 < 32767).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_group32<const R: usize, const ONE: bool>(
    g: &[u8],
    a: [&[BlockQ8]; R],
) -> [[f32; 8]; R] {
    let (bb, qh_off, qs_off) = layout(ONE);
    let gb = 8 * bb;
    let nb = blocks(g, ONE, &a);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: block `b < nb` of the group lies inside `g`, and block `b` of every
        // activation row exists (checked above); loads are unaligned.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ8; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut bits = first_bits(p.add(qh_off));
            let mut s16 = [[_mm256_setzero_si256(); R]; 2];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(qs_off + 32 * c) as *const __m256i);
                let (lo, hi) = fives(raw, bits.0, bits.1);
                bits = next_bits(bits);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    let pl = _mm256_maddubs_epi16(lo, word(q, 4 * c));
                    let ph = _mm256_maddubs_epi16(hi, word(q, 16 + 4 * c));
                    s16[c / 2][r] = _mm256_add_epi16(s16[c / 2][r], _mm256_add_epi16(pl, ph));
                }
            }
            let dm = scales::<ONE>(p);
            for r in 0..R {
                let sum = _mm256_add_epi32(
                    _mm256_madd_epi16(s16[0][r], ones),
                    _mm256_madd_epi16(s16[1][r], ones),
                );
                let s = if ONE { ys[r].sm } else { ys[r].s };
                scale_block::<ONE>(sum, dm, (ys[r].d, s), &mut acc[r], &mut accm[r]);
            }
        }
    }
    finish(acc, accm)
}

/// [`dot_group32`] with 16-bit activations: the five-bit bytes split into i16 pairs (bytes
/// 0, 2 and 1, 3 of each row's lane) that `madd` meets with the swizzled activation pairs
/// (at most 32 * 31 * 32767 per block: no overflow).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_group16<const R: usize, const ONE: bool>(
    g: &[u8],
    a: [&[BlockQ16]; R],
) -> [[f32; 8]; R] {
    let (bb, qh_off, qs_off) = layout(ONE);
    let gb = 8 * bb;
    let nb = blocks(g, ONE, &a);
    let mask = _mm256_set1_epi32(0x00ff_00ff);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: as in `dot_group32`.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ16; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut bits = first_bits(p.add(qh_off));
            let mut sum = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(qs_off + 32 * c) as *const __m256i);
                let (lo, hi) = fives(raw, bits.0, bits.1);
                bits = next_bits(bits);
                let ne = _mm256_and_si256(lo, mask);
                let no = _mm256_and_si256(_mm256_srli_epi32(lo, 8), mask);
                let he = _mm256_and_si256(hi, mask);
                let ho = _mm256_and_si256(_mm256_srli_epi32(hi, 8), mask);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    let l = _mm256_add_epi32(
                        _mm256_madd_epi16(ne, pair(q, 4 * c)),
                        _mm256_madd_epi16(no, pair(q, 4 * c + 2)),
                    );
                    let h = _mm256_add_epi32(
                        _mm256_madd_epi16(he, pair(q, 16 + 4 * c)),
                        _mm256_madd_epi16(ho, pair(q, 16 + 4 * c + 2)),
                    );
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_add_epi32(l, h));
                }
            }
            let dm = scales::<ONE>(p);
            for r in 0..R {
                scale_block::<ONE>(sum[r], dm, (ys[r].d, ys[r].s), &mut acc[r], &mut accm[r]);
            }
        }
    }
    finish(acc, accm)
}

/// [`dot_group16`] with `vpdpwssd` on 512 bits (as `x86_512::dot_group16`: bytes reordered
/// 0, 2, 1, 3 per row and widened, one fold of lane pairs per block). Bit-identical to AVX2.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_group16_512<const R: usize, const ONE: bool>(
    g: &[u8],
    a: [&[BlockQ16]; R],
) -> [[f32; 8]; R] {
    let (bb, qh_off, qs_off) = layout(ONE);
    let gb = 8 * bb;
    let nb = blocks(g, ONE, &a);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: as in `dot_group32`.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ16; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut bits = first_bits(p.add(qh_off));
            let mut s0 = [_mm512_setzero_si512(); R];
            let mut s1 = [_mm512_setzero_si512(); R];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(qs_off + 32 * c) as *const __m256i);
                let (lo, hi) = fives(raw, bits.0, bits.1);
                bits = next_bits(bits);
                let wl = _mm512_cvtepu8_epi16(swap_mid_bytes(lo));
                let wh = _mm512_cvtepu8_epi16(swap_mid_bytes(hi));
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    s0[r] = _mm512_dpwssd_epi32(s0[r], wl, quad(q, 4 * c));
                    s1[r] = _mm512_dpwssd_epi32(s1[r], wh, quad(q, 16 + 4 * c));
                }
            }
            let dm = scales::<ONE>(p);
            for r in 0..R {
                let sum = fold_pairs(_mm512_add_epi32(s0[r], s1[r]));
                scale_block::<ONE>(sum, dm, (ys[r].d, ys[r].s), &mut acc[r], &mut accm[r]);
            }
        }
    }
    finish(acc, accm)
}

/// [`dot_group32`] with `vpdpbusd` (unsigned five-bit bytes times signed activation bytes,
/// four products per lane summed exactly into i32). Bit-identical to AVX2.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_group32_512<const R: usize, const ONE: bool>(
    g: &[u8],
    a: [&[BlockQ8]; R],
) -> [[f32; 8]; R] {
    let (bb, qh_off, qs_off) = layout(ONE);
    let gb = 8 * bb;
    let nb = blocks(g, ONE, &a);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        // SAFETY: as in `dot_group32`.
        unsafe {
            let p = p0.add(b * gb);
            prefetch_ahead(p, gb);
            let ys: [&BlockQ8; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
            let mut bits = first_bits(p.add(qh_off));
            let mut s0 = [_mm256_setzero_si256(); R];
            let mut s1 = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(qs_off + 32 * c) as *const __m256i);
                let (lo, hi) = fives(raw, bits.0, bits.1);
                bits = next_bits(bits);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    s0[r] = _mm256_dpbusd_epi32(s0[r], lo, word(q, 4 * c));
                    s1[r] = _mm256_dpbusd_epi32(s1[r], hi, word(q, 16 + 4 * c));
                }
            }
            let dm = scales::<ONE>(p);
            for r in 0..R {
                let sum = _mm256_add_epi32(s0[r], s1[r]);
                let s = if ONE { ys[r].sm } else { ys[r].s };
                scale_block::<ONE>(sum, dm, (ys[r].d, s), &mut acc[r], &mut accm[r]);
            }
        }
    }
    finish(acc, accm)
}
