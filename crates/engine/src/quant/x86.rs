//! AVX2 (+FMA, F16C) dot products of one quantized weight row with `R` activation rows: the
//! weight blocks are unpacked once and meet every activation row (R = 1 for decode, more for
//! prefill). Integer products per block are exact (`maddubs`: unsigned x signed bytes into
//! i16 pairs, then `madd` into i32), scales are applied in f32 with FMA.
//!
//! Bounds that keep `maddubs` from saturating (two products per i16): Q4 values <= 15, Q5 <=
//! 31, Q6 <= 63 (unsigned) times |a| <= 127 gives at most 2 * 63 * 127 = 16002 < 32767; the
//! Q8_0 / Q4_0 paths use |w| via the sign trick, |w| <= 127 -> 2 * 127 * 127 = 32258.

// Index loops over block lanes read closer to the block layouts than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::act::{BlockQ16, BlockQ8, BlockQ8K};
use std::arch::x86_64::*;

/// Horizontal sum of 8 lanes (one fixed order, shared by the AVX-512 K-quant kernels).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The sum of the 8 i32 lanes of `v` (exact while it fits, as every block sum here does).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// `Σ m[j] (bsums[2j] + bsums[2j+1])`: a Q4_K / Q5_K super-block's mins against one
/// activation block (exact).
#[inline(always)]
pub(super) fn min_sum(m: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|j| m[j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32))
        .sum()
}

/// `Σ sc[g] bsums[g]`: a Q6_K super-block's signed scales against one activation block's
/// sums (exact), the term its offset of 32 meets.
#[inline(always)]
pub(super) fn offset_sum(sc: &[u8], bsums: &[i16; 16]) -> i32 {
    (0..16)
        .map(|g| (sc[g] as i8) as i32 * bsums[g] as i32)
        .sum()
}

/// Eight i32 sums of pairs of products of unsigned `u` and signed `y` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_u8_i8(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

/// 32 nibbles of 16 bytes: low nibbles first, then high nibbles (values 0..16, 16..32).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(raw, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Up to 8 f16 values at `p + k * stride` (k < n) as f32; the rest 0. Converting a group at
/// once keeps the per-block loop free of scalar conversions (a scalar `vpinsrw` + `vcvtph2ps`
/// per block chained every block to the previous one through a false register dependency).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(p: *const u8, stride: usize, n: usize) -> __m256 {
    let mut bits = [0u16; 8];
    for (k, b) in bits.iter_mut().enumerate().take(n) {
        *b = (p.add(k * stride) as *const u16).read_unaligned();
    }
    _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr() as *const __m128i))
}

/// The weight bytes of one 32-block ready for `maddubs`: (|w| or the unsigned nibbles, the
/// signs to move onto the activation or None for unsigned). `KIND` 0 = Q8_0, 1 = Q4_0,
/// 2 = Q4_1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack32<const KIND: u8>(b: *const u8) -> (__m256i, __m256i) {
    match KIND {
        0 => {
            let q = _mm256_loadu_si256(b.add(2) as *const __m256i);
            (_mm256_sign_epi8(q, q), q)
        }
        1 => {
            let q = _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8));
            (_mm256_sign_epi8(q, q), q)
        }
        _ => {
            let q = nibbles32(b.add(4));
            (q, q)
        }
    }
}

/// The 8 partial integer sums of one block times an activation block, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block32<const KIND: u8>(u: __m256i, q: __m256i, y: *const i8) -> __m256 {
    let y = _mm256_loadu_si256(y as *const __m256i);
    let y = if KIND == 2 { y } else { _mm256_sign_epi8(y, q) };
    _mm256_cvtepi32_ps(mul_sum_u8_i8(u, y))
}

/// The 32-block types (`KIND` as [`unpack32`]; Q4_1 adds its minimum times the activation
/// block sum). Block scales are converted 8 at a time (a scalar f16 conversion per block
/// chained each block to the previous one through a false register dependency), and blocks
/// alternate between two accumulators per row so the FMA latency does not serialise them.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q32<const R: usize, const KIND: u8>(w: &[u8], a: [&[BlockQ8]; R]) -> [f32; R] {
    let bb = match KIND {
        0 => 34,
        1 => 18,
        _ => 20,
    };
    let nb = w.len() / bb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    let mut min0 = [0f32; R];
    let mut min1 = [0f32; R];
    let wp = w.as_ptr();
    let mut dw = [0f32; 8];
    let mut mw = [0f32; 8];
    let mut i = 0;
    while i < nb {
        let n = (nb - i).min(8);
        let g = wp.add(i * bb);
        _mm256_storeu_ps(dw.as_mut_ptr(), f16x8(g, bb, n));
        if KIND == 2 {
            _mm256_storeu_ps(mw.as_mut_ptr(), f16x8(g.add(2), bb, n));
        }
        let mut k = 0;
        while k < n {
            let b = g.add(k * bb);
            let (u, q) = unpack32::<KIND>(b);
            for r in 0..R {
                let blk = a[r].get_unchecked(i + k);
                let p = block32::<KIND>(u, q, blk.qs.as_ptr());
                let scale = _mm256_set1_ps(dw[k] * blk.d);
                if k & 1 == 0 {
                    acc0[r] = _mm256_fmadd_ps(p, scale, acc0[r]);
                    if KIND == 2 {
                        min0[r] += mw[k] * blk.sm;
                    }
                } else {
                    acc1[r] = _mm256_fmadd_ps(p, scale, acc1[r]);
                    if KIND == 2 {
                        min1[r] += mw[k] * blk.sm;
                    }
                }
            }
            k += 1;
        }
        i += n;
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r])) + (min0[r] + min1[r]);
    }
    out
}

/// Q4_K (`five = false`) and Q5_K rows with 256-block activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q45k<const R: usize>(five: bool, w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let bb = if five { 176 } else { 144 };
    let qs_off = if five { 48 } else { 16 };
    let nb = w.len() / bb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mut out = [0f32; R];
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    let wp = w.as_ptr();
    for i in 0..nb {
        let b = wp.add(i * bb);
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        let (sc, m) = super::x86_kq512::scales_mins(b.add(4));
        let qh = if five {
            _mm256_loadu_si256(b.add(16) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(b.add(qs_off + 32 * c) as *const __m256i);
            let mut lo = _mm256_and_si256(raw, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            if five {
                let sh_lo = _mm_cvtsi32_si128(2 * c as i32);
                let sh_hi = _mm_cvtsi32_si128(2 * c as i32 + 1);
                let b_lo = _mm256_and_si256(_mm256_srl_epi16(qh, sh_lo), one);
                let b_hi = _mm256_and_si256(_mm256_srl_epi16(qh, sh_hi), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b_lo, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b_hi, 4));
            }
            let s_lo = _mm256_set1_epi16(sc[2 * c] as i16);
            let s_hi = _mm256_set1_epi16(sc[2 * c + 1] as i16);
            for r in 0..R {
                let y = a[r].get_unchecked(i).qs.as_ptr().add(64 * c);
                let ya = _mm256_loadu_si256(y as *const __m256i);
                let yb = _mm256_loadu_si256(y.add(32) as *const __m256i);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ya), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yb), s_hi);
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for r in 0..R {
            let blk = a[r].get_unchecked(i);
            let (isum, msum) = (hsum_i32(sumi[r]), min_sum(&m, &blk.bsums));
            // `scalar::dot_q8k`'s order, so every level gives the reference's bits.
            out[r] += blk.d * (d * isum as f32 - dmin * msum as f32);
        }
    }
    out
}

/// Bits `s, s+1` of every byte of `qh`, moved to bits 4 and 5.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn high_bits(qh: __m256i, s: i32, m3: __m256i) -> __m256i {
    let sh = _mm_cvtsi32_si128(s);
    _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh), m3), 4)
}

/// Q6_K rows with 256-block activations: unsigned 6-bit values, the offset of 32 through the
/// block sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let nb = w.len() / 210;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mut out = [0f32; R];
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(3);
    let wp = w.as_ptr();
    for i in 0..nb {
        let b = wp.add(i * 210);
        // d is the last 2 bytes of the block: read 4 bytes ending there, take the upper half.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(
            (b.add(206) as *const i32).read_unaligned(),
        ));
        let d = _mm_cvtss_f32(_mm_movehdup_ps(dm));
        let sc = std::slice::from_raw_parts(b.add(192), 16);
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(b.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
            let u = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), high_bits(qh, 0, m3)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), high_bits(qh, 2, m3)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    high_bits(qh, 4, m3),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    high_bits(qh, 6, m3),
                ),
            ];
            for (q, &uq) in u.iter().enumerate() {
                let g = 8 * h + 2 * q;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(sc[g + 1] as i8 as i16),
                    _mm_set1_epi16(sc[g] as i8 as i16),
                );
                for r in 0..R {
                    let y = a[r].get_unchecked(i).qs.as_ptr().add(128 * h + 32 * q);
                    let y = _mm256_loadu_si256(y as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(uq, y), scale);
                    sumi[r] = _mm256_add_epi32(sumi[r], p);
                }
            }
        }
        for r in 0..R {
            let blk = a[r].get_unchecked(i);
            let isum = hsum_i32(sumi[r]) - 32 * offset_sum(sc, &blk.bsums);
            // `scalar::dot_q8k`'s order, so every level gives the reference's bits.
            out[r] += blk.d * d * isum as f32;
        }
    }
    out
}

/// F32 / F16 / BF16 rows (`kind` 0, 1, 2) with f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_float<const R: usize>(kind: u8, w: &[u8], x: [&[f32]; R]) -> [f32; R] {
    let eb = if kind == 0 { 4 } else { 2 };
    let n = w.len() / eb;
    for xr in &x {
        assert!(xr.len() >= n);
    }
    let body = n / 8 * 8;
    let wp = w.as_ptr();
    let mut acc = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i < body {
        let wv = match kind {
            0 => _mm256_loadu_ps(wp.add(4 * i) as *const f32),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
                16,
            )),
        };
        for r in 0..R {
            acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[r].as_ptr().add(i)), acc[r]);
        }
        i += 8;
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
    if body < n {
        let kinds = [super::QType::F32, super::QType::F16, super::QType::BF16];
        let t = kinds[kind as usize];
        for r in 0..R {
            out[r] += super::scalar::dot_float(t, &w[body * eb..], &x[r][body..n]);
        }
    }
    out
}

/// One block of 32 activations quantized as `act::quantize_q8_scalar` does (values times
/// 127 / amax, clamp, round to nearest even; the scale rounded to f16), and its sum term.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_block_q8(x: &[f32], b: &mut BlockQ8) {
    assert!(x.len() >= 32);
    let p = x.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vi in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
    let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let q: [__m256i; 4] = std::array::from_fn(|i| {
        let s = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], inv), lo), hi);
        _mm256_cvtps_epi32(s)
    });
    let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s4 = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01));
    // i32 -> i16 -> i8 packs interleave 128-bit halves; the permute restores the order.
    let w16a = _mm256_packs_epi32(q[0], q[1]);
    let w16b = _mm256_packs_epi32(q[2], q[3]);
    let w8 = _mm256_packs_epi16(w16a, w16b);
    let w8 = _mm256_permutevar8x32_epi32(w8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, w8);
    let sum = _mm_cvtsi128_si32(s1) as f32;
    b.d = super::act::via_f16(amax / 127.0);
    b.s = b.d * sum;
    b.sm = super::act::via_f16(amax / 127.0 * sum);
}

/// The 4 activation bytes at `y + at` broadcast to every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn word(y: *const i8, at: usize) -> __m256i {
    _mm256_set1_epi32((y.add(at) as *const i32).read_unaligned())
}

/// Bytes ahead of the block being read that decode asks the cache for: the streamed weights
/// come from L3/DRAM, and the integer work per byte leaves too few loads in flight for the
/// hardware prefetcher alone (measured: SmolLM2 Q4_1 decode, see docs/performance-generate.md).
const PREFETCH_DISTANCE: usize = 1024;

/// Prefetches the cache lines of the block `PREFETCH_DISTANCE` bytes after `p` (a block of
/// `gb` bytes). Prefetches never fault, so reading past the matrix is harmless.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_ahead(p: *const u8, gb: usize) {
    let ahead = p.wrapping_add(PREFETCH_DISTANCE);
    let mut off = 0;
    while off < gb + 64 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off) as *const i8);
        off += 64;
    }
}

/// The 8 rows of one interleaved group ([`super::packed`]) times `R` activation rows:
/// `out[j][l]` = row `l` of the group · activation row `j`. `KIND` as [`unpack32`] (0 = Q8_0,
/// 1 = Q4_0, 2 = Q4_1). Each 32-byte load holds 4 quant bytes of every row, met by the
/// activation's 4 bytes broadcast to all lanes, so the integer sums arrive in row order and
/// one FMA per block applies the 8 rows' scales at once. Q4 products stay in i16 for a whole
/// block (8 `maddubs` of at most 2 * 15 * 127 = 3810 each: <= 30480 < 32767); Q8_0 takes the
/// sign trick and widens every product pair (2 * 127 * 127 = 32258).
///
/// The arithmetic of activation row `j` does not depend on `R` (same operations, same order),
/// so tiles of rows give bit-identical results to single rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_group32<const R: usize, const KIND: u8>(
    g: &[u8],
    a: [&[BlockQ8]; R],
) -> [[f32; 8]; R] {
    let bb = match KIND {
        0 => 34,
        1 => 18,
        _ => 20,
    };
    let gb = 8 * bb;
    let nb = g.len() / gb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        let p = p0.add(b * gb);
        prefetch_ahead(p, gb);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let ys: [&BlockQ8; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
        let mut sum = [_mm256_setzero_si256(); R];
        if KIND == 0 {
            for c in 0..8 {
                let w = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                let aw = _mm256_sign_epi8(w, w);
                for r in 0..R {
                    let y = _mm256_sign_epi8(word(ys[r].qs.as_ptr(), 4 * c), w);
                    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, y), ones);
                    sum[r] = _mm256_add_epi32(sum[r], s);
                }
            }
        } else {
            let off = if KIND == 2 { 32 } else { 16 };
            let mut s16 = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(off + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(raw, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    let pl = _mm256_maddubs_epi16(lo, word(q, 4 * c));
                    let ph = _mm256_maddubs_epi16(hi, word(q, 16 + 4 * c));
                    s16[r] = _mm256_add_epi16(s16[r], _mm256_add_epi16(pl, ph));
                }
            }
            for r in 0..R {
                sum[r] = _mm256_madd_epi16(s16[r], ones);
            }
        }
        let m = if KIND == 2 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            d
        };
        for r in 0..R {
            let da = _mm256_set1_ps(ys[r].d);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r]), _mm256_mul_ps(d, da), acc[r]);
            match KIND {
                // Q4_0 values are nibbles - 8: the -8 meets the activation block sum.
                1 => accm[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(-8.0 * ys[r].s), accm[r]),
                2 => accm[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(ys[r].sm), accm[r]),
                _ => {}
            }
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], accm[r]));
    }
    out
}

/// One block of 32 activations at 16 bits, as `act::quantize_q16_scalar` (amax / 32767,
/// clamp, ties to even), values in the swizzled order 0, 2, 1, 3 of every 4.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_block_q16(x: &[f32], b: &mut BlockQ16) {
    assert!(x.len() >= 32);
    let p = x.as_ptr();
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vi in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
    let d = amax / 32767.0;
    let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
    let (lo, hi) = (_mm256_set1_ps(-32767.0), _mm256_set1_ps(32767.0));
    // Each 128-bit half is one group of 4 values: reorder to 0, 2, 1, 3.
    let q: [__m256i; 4] = std::array::from_fn(|i| {
        let s = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], inv), lo), hi);
        _mm256_shuffle_epi32(_mm256_cvtps_epi32(s), 0b11_01_10_00)
    });
    let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s4 = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01));
    // packs interleaves the 128-bit halves of its two inputs; permute4x64 restores the order.
    let a = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0b11_01_10_00);
    let c = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0b11_01_10_00);
    _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, a);
    _mm256_storeu_si256(b.qs.as_mut_ptr().add(16) as *mut __m256i, c);
    b.d = d;
    b.s = d * _mm_cvtsi128_si32(s1) as f32;
}

/// The i16 pair at `y + at` (two swizzled activation values) broadcast to every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pair(y: *const i16, at: usize) -> __m256i {
    _mm256_set1_epi32((y.add(at) as *const i32).read_unaligned())
}

/// [`dot_group32`] with 16-bit activations: the weights' 32-bit lanes (4 bytes or 8 nibbles
/// of one row) split into i16 pairs (bytes 0, 2 and 1, 3; Q4: the low and high nibbles of
/// those) that `madd` meets with the matching swizzled activation pair, products summed in
/// i32 (at most 8 * 2 * 127 * 32767 per block: no overflow).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_group16<const R: usize, const KIND: u8>(
    g: &[u8],
    a: [&[BlockQ16]; R],
) -> [[f32; 8]; R] {
    let bb = match KIND {
        0 => 34,
        1 => 18,
        _ => 20,
    };
    let gb = 8 * bb;
    let nb = g.len() / gb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mask = _mm256_set1_epi32(0x000f_000f);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let p0 = g.as_ptr();
    for b in 0..nb {
        let p = p0.add(b * gb);
        prefetch_ahead(p, gb);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let ys: [&BlockQ16; R] = std::array::from_fn(|r| a[r].get_unchecked(b));
        let mut sum = [_mm256_setzero_si256(); R];
        if KIND == 0 {
            for c in 0..8 {
                let w = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                let even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
                let odd = _mm256_srai_epi16(w, 8);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    let e = _mm256_madd_epi16(even, pair(q, 4 * c));
                    let o = _mm256_madd_epi16(odd, pair(q, 4 * c + 2));
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_add_epi32(e, o));
                }
            }
        } else {
            let off = if KIND == 2 { 32 } else { 16 };
            for c in 0..4 {
                let v = _mm256_loadu_si256(p.add(off + 32 * c) as *const __m256i);
                let ne = _mm256_and_si256(v, mask);
                let no = _mm256_and_si256(_mm256_srli_epi32(v, 8), mask);
                let he = _mm256_and_si256(_mm256_srli_epi32(v, 4), mask);
                let ho = _mm256_and_si256(_mm256_srli_epi32(v, 12), mask);
                for r in 0..R {
                    let q = ys[r].qs.as_ptr();
                    let lo = _mm256_add_epi32(
                        _mm256_madd_epi16(ne, pair(q, 4 * c)),
                        _mm256_madd_epi16(no, pair(q, 4 * c + 2)),
                    );
                    let hi = _mm256_add_epi32(
                        _mm256_madd_epi16(he, pair(q, 16 + 4 * c)),
                        _mm256_madd_epi16(ho, pair(q, 16 + 4 * c + 2)),
                    );
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_add_epi32(lo, hi));
                }
            }
        }
        let m = if KIND == 2 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            d
        };
        for r in 0..R {
            let da = _mm256_set1_ps(ys[r].d);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r]), _mm256_mul_ps(d, da), acc[r]);
            match KIND {
                1 => accm[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(-8.0 * ys[r].s), accm[r]),
                2 => accm[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(ys[r].s), accm[r]),
                _ => {}
            }
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], accm[r]));
    }
    out
}
