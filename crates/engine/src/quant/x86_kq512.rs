//! AVX-512 (F + BW + VL + VNNI) K-quant row kernels, bit-identical to the AVX2 ones in
//! [`super::x86`] and to the scalar reference: the same exact integer sums per super-block,
//! then the f32 operations of `scalar::dot_q8k` in its order.
//!
//! One 512-bit register holds two of the AVX2 kernel's 256-bit chunks (two sub-blocks that
//! meet 64 contiguous activation bytes), `maddubs` forms the same i16 pairs, and VNNI's
//! `dpwssd` multiplies them by the sub-block scales and accumulates in one instruction (exact:
//! no saturation, and the sums stay far inside i32). At the end of a block the two 256-bit
//! halves are added, which gives every AVX2 lane exactly its own terms (integer addition is
//! exact, so the order does not matter). The `maddubs` bounds are the AVX2 ones.

// Index loops over block lanes read closer to the block layouts than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::act::BlockQ8K;
use super::x86::{hsum_i32, min_sum, offset_sum};
use std::arch::x86_64::*;

/// Whether this CPU runs these kernels (detected once).
pub fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Q4_K / Q5_K rows with the fastest kernel of this CPU: AVX-512 up to 3 activation rows; at
/// 4 the multiplier ports bound both kernels alike and the 512-bit one measured slower
/// (`bench::kq512_speed`). Both give the same bits.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (the caller's `Level::Avx2`).
#[inline]
pub unsafe fn dot_q45k_best<const R: usize>(five: bool, w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    if R < 4 && available() {
        dot_q45k(five, w, a)
    } else {
        super::x86::dot_q45k(five, w, a)
    }
}

/// Q6_K rows with the fastest kernel of this CPU (AVX-512 up to 3 rows, as Q4_K).
///
/// # Safety
/// As [`dot_q45k_best`].
#[inline]
pub unsafe fn dot_q6k_best<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    if R < 4 && available() {
        dot_q6k(w, a)
    } else {
        super::x86::dot_q6k(w, a)
    }
}

/// The 8 AVX2 lanes of a 512-bit block sum: its two 256-bit halves added.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fold(s: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1))
}

/// 32 bytes at `p` in both 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn both_halves(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i))
}

/// 16-bit lanes: `lo` in the low 256 bits, `hi` in the high 256 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
        _mm256_set1_epi16(hi),
        1,
    )
}

/// The 8 scales and 8 mins of a Q4_K / Q5_K super-block from its 12 scale bytes at `q`, with
/// word operations (the values of `scalar::scales_mins_k4`, which the tests check).
#[inline(always)]
pub(super) unsafe fn scales_mins(q: *const u8) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let u: [u32; 3] = std::array::from_fn(|k| (q.add(4 * k) as *const u32).read_unaligned());
    let sc_lo = u[0] & LOW6;
    let m_lo = u[1] & LOW6;
    let sc_hi = (u[2] & LOW4) | (((u[0] >> 6) & LOW2) << 4);
    let m_hi = ((u[2] >> 4) & LOW4) | (((u[1] >> 6) & LOW2) << 4);
    let sc = ((sc_hi as u64) << 32 | sc_lo as u64).to_le_bytes();
    let m = ((m_hi as u64) << 32 | m_lo as u64).to_le_bytes();
    (sc, m)
}

/// Q4_K (`five = false`) and Q5_K rows with 256-block activations; the result of
/// `x86::dot_q45k`, bit for bit. Chunk `c` of 32 weight bytes is in both halves: low nibbles
/// (sub-block `2c`) below, high nibbles (`2c + 1`) above, meeting activations `64c..64c+64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q45k<const R: usize>(five: bool, w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let bb = if five { 176 } else { 144 };
    let qs_off = if five { 48 } else { 16 };
    let nb = w.len() / bb;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mut out = [0f32; R];
    let m4 = _mm512_set1_epi8(0x0f);
    let m16 = _mm512_set1_epi8(0x10);
    // The low half keeps the low nibbles, the high half shifts the high ones down.
    let nib_shift = halves16(0, 4);
    let wp = w.as_ptr();
    for i in 0..nb {
        let b = wp.add(i * bb);
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        let (sc, m) = scales_mins(b.add(4));
        // Q5_K: bit 2c of each qh byte is the fifth bit of the low nibbles of chunk c, bit
        // 2c + 1 that of the high ones; the high half starts one bit further.
        let mut qh = if five {
            _mm512_srlv_epi16(both_halves(b.add(16)), halves16(0, 1))
        } else {
            _mm512_setzero_si512()
        };
        let mut sumi = [_mm512_setzero_si512(); R];
        for c in 0..4 {
            let raw = both_halves(b.add(qs_off + 32 * c));
            let mut u = _mm512_and_si512(_mm512_srlv_epi16(raw, nib_shift), m4);
            if five {
                u = _mm512_or_si512(u, _mm512_and_si512(_mm512_slli_epi16(qh, 4), m16));
                qh = _mm512_srli_epi16(qh, 2);
            }
            let s = halves16(sc[2 * c] as i16, sc[2 * c + 1] as i16);
            for r in 0..R {
                let y = a[r].get_unchecked(i).qs.as_ptr().add(64 * c);
                let y = _mm512_loadu_si512(y as *const _);
                sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(u, y), s);
            }
        }
        for r in 0..R {
            let blk = a[r].get_unchecked(i);
            let (isum, msum) = (hsum_i32(fold(sumi[r])), min_sum(&m, &blk.bsums));
            out[r] += blk.d * (d * isum as f32 - dmin * msum as f32);
        }
    }
    out
}

/// Bits `s, s + 1` of every qh byte in the low half and `s + 2, s + 3` in the high half,
/// moved to bits 4 and 5 (`x86::high_bits` of two chunks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn high_bits2(qh: __m512i, s: i16, m3: __m512i) -> __m512i {
    let v = _mm512_srlv_epi16(qh, halves16(s, s + 2));
    _mm512_slli_epi16(_mm512_and_si512(v, m3), 4)
}

/// The 16-bit scales of sub-blocks `g0 .. g0 + 4` (16 values each, 8 lanes each) from the 16
/// sign-extended scales `sc16` (lanes 0..16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn scales4(sc16: __m512i, g0: i16) -> __m512i {
    let idx = _mm512_set_epi64(
        0x0003_0003_0003_0003,
        0x0003_0003_0003_0003,
        0x0002_0002_0002_0002,
        0x0002_0002_0002_0002,
        0x0001_0001_0001_0001,
        0x0001_0001_0001_0001,
        0,
        0,
    );
    _mm512_permutexvar_epi16(_mm512_add_epi16(idx, _mm512_set1_epi16(g0)), sc16)
}

/// Q6_K rows with 256-block activations; the result of `x86::dot_q6k`, bit for bit. The 64
/// low-bit bytes of each half-block are one load: their low nibbles are the AVX2 chunks 0
/// and 1, the high nibbles chunks 2 and 3, each pair meeting 64 contiguous activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q6k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let nb = w.len() / 210;
    for ar in &a {
        assert!(ar.len() >= nb);
    }
    let mut out = [0f32; R];
    let m4 = _mm512_set1_epi8(0x0f);
    let m3 = _mm512_set1_epi8(3);
    let wp = w.as_ptr();
    for i in 0..nb {
        let b = wp.add(i * 210);
        // d is the last 2 bytes of the block: read 4 bytes ending there, take the upper half.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(
            (b.add(206) as *const i32).read_unaligned(),
        ));
        let d = _mm_cvtss_f32(_mm_movehdup_ps(dm));
        let sc = std::slice::from_raw_parts(b.add(192), 16);
        let sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(
            b.add(192) as *const __m128i
        )));
        let mut sumi = [_mm512_setzero_si512(); R];
        for h in 0..2 {
            let ql = _mm512_loadu_si512(b.add(64 * h) as *const _);
            let qh = both_halves(b.add(128 + 32 * h));
            let u01 = _mm512_or_si512(_mm512_and_si512(ql, m4), high_bits2(qh, 0, m3));
            let u23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                high_bits2(qh, 4, m3),
            );
            let s01 = scales4(sc16, 8 * h as i16);
            let s23 = scales4(sc16, 8 * h as i16 + 4);
            for r in 0..R {
                let y = a[r].get_unchecked(i).qs.as_ptr().add(128 * h);
                let y01 = _mm512_loadu_si512(y as *const _);
                let y23 = _mm512_loadu_si512(y.add(64) as *const _);
                sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(u01, y01), s01);
                sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(u23, y23), s23);
            }
        }
        for r in 0..R {
            let blk = a[r].get_unchecked(i);
            let isum = hsum_i32(fold(sumi[r])) - 32 * offset_sum(sc, &blk.bsums);
            out[r] += blk.d * d * isum as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::act::quantize_q8k;
    use super::super::{scalar, x86, QType};
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn f(&mut self) -> f32 {
            (self.next() % 20001) as f32 / 10000.0 - 1.0
        }
    }

    fn put_f16(b: &mut [u8], at: usize, v: f32) {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }

    /// One random, well-formed weight row of `t` (every quantized bit random).
    fn random_row(t: QType, cols: usize, seed: u64) -> Vec<u8> {
        let mut g = Lcg(seed);
        let bb = t.block_bytes();
        let mut w: Vec<u8> = (0..cols / 256 * bb).map(|_| g.next() as u8).collect();
        for b in w.chunks_exact_mut(bb) {
            if t == QType::Q6K {
                put_f16(b, 208, 0.001 + 0.002 * g.f().abs());
            } else {
                put_f16(b, 0, 0.001 + 0.002 * g.f().abs());
                put_f16(b, 2, 0.001 + 0.002 * g.f().abs());
            }
        }
        w
    }

    /// 4 activation rows of `cols`, the last with extreme values (|q| = 127 everywhere, so
    /// `maddubs` runs at its bound).
    fn act_rows(cols: usize, seed: u64) -> Vec<Vec<BlockQ8K>> {
        let mut g = Lcg(seed);
        (0..4)
            .map(|r| {
                let x: Vec<f32> = (0..cols)
                    .map(|_| match r {
                        3 => [-1.0, 1.0][(g.next() & 1) as usize],
                        _ => g.f() * 2.0,
                    })
                    .collect();
                let mut q = Vec::new();
                quantize_q8k(&x, &mut q);
                q
            })
            .collect()
    }

    /// The 512-bit kernel of `t` and the AVX2 one for `R` rows, checked per row.
    fn check<const R: usize>(t: QType, w: &[u8], acts: &[Vec<BlockQ8K>], cols: usize) {
        let a: [&[BlockQ8K]; R] = std::array::from_fn(|r| acts[r].as_slice());
        // SAFETY: the caller checked `available()` (AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C).
        let (fast, slow) = unsafe {
            match t {
                QType::Q6K => (dot_q6k(w, a), x86::dot_q6k(w, a)),
                _ => {
                    let five = t == QType::Q5K;
                    (dot_q45k(five, w, a), x86::dot_q45k(five, w, a))
                }
            }
        };
        for r in 0..R {
            assert_eq!(
                fast[r].to_bits(),
                slow[r].to_bits(),
                "{} cols {cols} R {R} row {r}: {} vs {}",
                t.name(),
                fast[r],
                slow[r]
            );
            // Exact integer block sums, then the reference's f32 steps in its order.
            let s = scalar::dot_q8k(t, w, a[r]);
            assert_eq!(
                fast[r].to_bits(),
                s.to_bits(),
                "{} cols {cols} R {R} row {r}: {} vs scalar {s}",
                t.name(),
                fast[r]
            );
        }
    }

    #[test]
    fn kq512_equals_avx2_bit_for_bit_and_the_scalar_reference() {
        if !available() {
            eprintln!("skipped: no AVX-512 F/BW/VL/VNNI on this CPU");
            return;
        }
        for t in [QType::Q4K, QType::Q5K, QType::Q6K] {
            for (k, cols) in [256, 512, 1536, 2304].into_iter().enumerate() {
                let w = random_row(t, cols, 11 + k as u64);
                let acts = act_rows(cols, 29 + k as u64);
                check::<1>(t, &w, &acts, cols);
                check::<2>(t, &w, &acts, cols);
                check::<3>(t, &w, &acts, cols);
                check::<4>(t, &w, &acts, cols);
                // Each row alone: the last one (extreme activations) as row 0 too.
                check::<1>(t, &w, &acts[3..], cols);
            }
        }
    }

    #[test]
    fn word_scales_equal_the_scalar_ones() {
        let mut g = Lcg(3);
        for _ in 0..2000 {
            let q: [u8; 12] = std::array::from_fn(|_| g.next() as u8);
            // SAFETY: `q` holds the 12 bytes read.
            let fast = unsafe { scales_mins(q.as_ptr()) };
            assert_eq!(fast, scalar::scales_mins_k4(&q), "{q:?}");
        }
    }

    #[test]
    fn kq512_matches_at_extreme_weights() {
        if !available() {
            eprintln!("skipped: no AVX-512 F/BW/VL/VNNI on this CPU");
            return;
        }
        // All quant bits set (largest values, scale bytes 0xff: Q6_K scale -1, Q4_K 63).
        for t in [QType::Q4K, QType::Q5K, QType::Q6K] {
            let cols = 512;
            let mut w = vec![0xffu8; cols / 256 * t.block_bytes()];
            for b in w.chunks_exact_mut(t.block_bytes()) {
                if t == QType::Q6K {
                    put_f16(b, 208, 0.003);
                } else {
                    put_f16(b, 0, 0.003);
                    put_f16(b, 2, 0.002);
                }
            }
            let acts = act_rows(cols, 7);
            check::<4>(t, &w, &acts, cols);
            check::<1>(t, &w, &acts[3..], cols);
        }
    }
}

#[cfg(test)]
mod bench {
    use super::super::act::quantize_q8k;
    use super::super::{x86, QType};
    use super::*;

    /// Microseconds per pass of both kernels over a `[576, 1536]` matrix of `t`, `R` rows.
    fn time<const R: usize>(t: QType, w: &[u8], q: &[BlockQ8K]) -> [f64; 2] {
        let rb = 1536 / 256 * t.block_bytes();
        let a = [q; R];
        let mut best = [f64::MAX; 2];
        for _ in 0..15 {
            for (fast, b) in best.iter_mut().enumerate() {
                let t0 = std::time::Instant::now();
                let mut s = 0f32;
                for _ in 0..20 {
                    for row in w.chunks_exact(rb) {
                        // SAFETY: the caller checked `available()`.
                        s += unsafe {
                            match (t, fast == 1) {
                                (QType::Q6K, true) => dot_q6k(row, a)[R - 1],
                                (QType::Q6K, false) => x86::dot_q6k(row, a)[R - 1],
                                (_, true) => dot_q45k(false, row, a)[R - 1],
                                _ => x86::dot_q45k(false, row, a)[R - 1],
                            }
                        };
                    }
                }
                std::hint::black_box(s);
                *b = b.min(t0.elapsed().as_secs_f64() * 1e6 / 20.0);
            }
        }
        best
    }

    /// Times the kernels (`cargo test --release --lib kq512_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kq512_speed() {
        if !available() {
            return;
        }
        let (rows, cols) = (576, 1536);
        for t in [QType::Q4K, QType::Q6K] {
            let mut w: Vec<u8> = (0..rows * cols / 256 * t.block_bytes())
                .map(|i| (i * 7919 % 251) as u8)
                .collect();
            for b in w.chunks_exact_mut(t.block_bytes()) {
                // Normal f16 scales (0x2020 ~ 0.008): no subnormal slow paths.
                let at = if t == QType::Q6K { 208 } else { 0 };
                let end = (at + 4).min(b.len());
                b[at..end].fill(0x20);
            }
            let x: Vec<f32> = (0..cols).map(|i| (i % 17) as f32 - 8.0).collect();
            let mut q = Vec::new();
            quantize_q8k(&x, &mut q);
            let r = [
                time::<1>(t, &w, &q),
                time::<2>(t, &w, &q),
                time::<3>(t, &w, &q),
                time::<4>(t, &w, &q),
            ];
            for (k, [avx2, v512]) in r.iter().enumerate() {
                eprintln!(
                    "{} R={}: avx2 {avx2:.1} us, avx512 {v512:.1} us",
                    t.name(),
                    k + 1
                );
            }
        }
    }
}
