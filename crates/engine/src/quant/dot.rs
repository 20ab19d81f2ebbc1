//! Row dot products of a quantized weight row with prepared activation rows, at the SIMD
//! level of this CPU (detected once) or at a level a test asks for.

use super::act::QuantizedActs;
use super::scalar;
use super::{ActKind, QType};

/// The kernel family: AVX-512 F/BW/VL/VNNI (on top of AVX2: the group kernels, the rest as
/// AVX2), AVX2 + FMA + F16C, or the portable scalar reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Avx512Vnni,
    Avx2,
    Scalar,
}

impl Level {
    pub fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    return Level::Avx512Vnni;
                }
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512Vnni => "avx512vnni",
            Level::Avx2 => "avx2",
            Level::Scalar => "scalar",
        }
    }

    /// Whether the AVX2 kernels may run (every level above Scalar includes AVX2).
    pub fn has_avx2(self) -> bool {
        matches!(self, Level::Avx2 | Level::Avx512Vnni)
    }
}

/// The level of this CPU, detected once.
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(Level::detect)
}

/// `out[j] = w · x[rows[j]]` for one weight row `w` (block bytes of `t`): `x` is the f32
/// activations `[n, acts.cols]` (read by F32/F16/BF16 rows), `acts` their quantized forms
/// (prepared for `t.act_kind()`). The weight row is unpacked once for all `R` rows.
///
/// Panics if `acts` lacks the form `t` needs or rows are out of range (callers prepare both).
pub fn dot_rows<const R: usize>(
    level: Level,
    t: QType,
    w: &[u8],
    x: &[f32],
    acts: &QuantizedActs,
    rows: [usize; R],
) -> [f32; R] {
    let cols = acts.cols;
    assert!(
        acts.has(t.act_kind()),
        "activations not prepared for {}",
        t.name()
    );
    assert_eq!(w.len(), cols / t.block_len() * t.block_bytes());
    if t.act_kind() == ActKind::Q8 && acts.has_q16() {
        // Plain rows meeting 16-bit activations (interleaved groups take `dot_group`).
        return rows.map(|r| scalar::dot_q16(t, w, acts.q16_row(r)));
    }
    let mut out = [0f32; R];
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512Vnni => {
            use super::x86;
            use super::x86_kq512 as kq;
            // SAFETY: `Level::Avx2` is only detected (or chosen by a test that checked it) on
            // CPUs with AVX2, FMA and F16C; each kernel checks its activation lengths.
            unsafe {
                out = match t {
                    QType::F32 | QType::F16 | QType::BF16 => {
                        let kind = match t {
                            QType::F32 => 0,
                            QType::F16 => 1,
                            _ => 2,
                        };
                        x86::dot_float(kind, w, rows.map(|r| &x[r * cols..(r + 1) * cols]))
                    }
                    QType::Q8_0 => x86::dot_q32::<R, 0>(w, rows.map(|r| acts.q8_row(r))),
                    QType::Q4_0 => x86::dot_q32::<R, 1>(w, rows.map(|r| acts.q8_row(r))),
                    QType::Q4_1 => x86::dot_q32::<R, 2>(w, rows.map(|r| acts.q8_row(r))),
                    // Plain Q5 rows (tails past the last group of 8) are rare: the reference.
                    QType::Q5_0 | QType::Q5_1 => rows.map(|r| scalar::dot_q8(t, w, acts.q8_row(r))),
                    // K-quants: AVX-512 VNNI where the CPU has it (bit-identical to AVX2).
                    QType::Q4K | QType::Q5K if level == Level::Avx512Vnni => {
                        kq::dot_q45k_best(t == QType::Q5K, w, rows.map(|r| acts.q8k_row(r)))
                    }
                    QType::Q6K if level == Level::Avx512Vnni => {
                        kq::dot_q6k_best(w, rows.map(|r| acts.q8k_row(r)))
                    }
                    QType::Q4K | QType::Q5K => {
                        x86::dot_q45k(t == QType::Q5K, w, rows.map(|r| acts.q8k_row(r)))
                    }
                    QType::Q6K => x86::dot_q6k(w, rows.map(|r| acts.q8k_row(r))),
                };
            }
        }
        _ => {
            for (o, &r) in out.iter_mut().zip(&rows) {
                *o = match t.act_kind() {
                    ActKind::F32 => scalar::dot_float(t, w, &x[r * cols..(r + 1) * cols]),
                    ActKind::Q8 => scalar::dot_q8(t, w, acts.q8_row(r)),
                    ActKind::Q8K => scalar::dot_q8k(t, w, acts.q8k_row(r)),
                };
            }
        }
    }
    out
}

/// `out[j][l]` = row `l` of one interleaved group `g` (the bytes of
/// [`super::QMatrix::group`], type `t`: Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1) · activation row
/// `rows[j]` of
/// `acts` (prepared for 32-blocks). The group is unpacked once for all `R` rows.
///
/// Panics if `acts` lacks the 32-blocks or a row is out of range (callers prepare both).
pub fn dot_group<const R: usize>(
    level: Level,
    t: QType,
    g: &[u8],
    acts: &QuantizedActs,
    rows: [usize; R],
) -> [[f32; 8]; R] {
    assert!(
        super::packed::interleavable(t) && acts.has(ActKind::Q8),
        "dot_group: {} rows need interleaving and 32-block activations",
        t.name()
    );
    let row_bytes = acts.cols / t.block_len() * t.block_bytes();
    assert_eq!(g.len(), 8 * row_bytes, "dot_group: not one group of 8 rows");
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni if acts.has_q16() => {
            use super::{x86_512, x86_q5};
            let a = rows.map(|r| acts.q16_row(r));
            // SAFETY: `Level::Avx512Vnni` is only detected (or chosen by a test that checked
            // it) on CPUs with AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
            unsafe {
                match t {
                    QType::Q8_0 => x86_512::dot_group16::<R, 0>(g, a),
                    QType::Q4_0 => x86_512::dot_group16::<R, 1>(g, a),
                    QType::Q5_0 => x86_q5::dot_group16_512::<R, false>(g, a),
                    QType::Q5_1 => x86_q5::dot_group16_512::<R, true>(g, a),
                    _ => x86_512::dot_group16::<R, 2>(g, a),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => {
            use super::{x86_512, x86_q5};
            let a = rows.map(|r| acts.q8_row(r));
            // SAFETY: as above.
            unsafe {
                match t {
                    QType::Q8_0 => x86_512::dot_group32::<R, 0>(g, a),
                    QType::Q4_0 => x86_512::dot_group32::<R, 1>(g, a),
                    QType::Q5_0 => x86_q5::dot_group32_512::<R, false>(g, a),
                    QType::Q5_1 => x86_q5::dot_group32_512::<R, true>(g, a),
                    _ => x86_512::dot_group32::<R, 2>(g, a),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if acts.has_q16() => {
            use super::{x86, x86_q5};
            let a = rows.map(|r| acts.q16_row(r));
            // SAFETY: as in `dot_rows`; the kernel checks the activation lengths.
            unsafe {
                match t {
                    QType::Q8_0 => x86::dot_group16::<R, 0>(g, a),
                    QType::Q4_0 => x86::dot_group16::<R, 1>(g, a),
                    QType::Q5_0 => x86_q5::dot_group16::<R, false>(g, a),
                    QType::Q5_1 => x86_q5::dot_group16::<R, true>(g, a),
                    _ => x86::dot_group16::<R, 2>(g, a),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            use super::{x86, x86_q5};
            let a = rows.map(|r| acts.q8_row(r));
            // SAFETY: as in `dot_rows`; the kernel checks the activation lengths.
            unsafe {
                match t {
                    QType::Q8_0 => x86::dot_group32::<R, 0>(g, a),
                    QType::Q4_0 => x86::dot_group32::<R, 1>(g, a),
                    QType::Q5_0 => x86_q5::dot_group32::<R, false>(g, a),
                    QType::Q5_1 => x86_q5::dot_group32::<R, true>(g, a),
                    _ => x86::dot_group32::<R, 2>(g, a),
                }
            }
        }
        _ => {
            let mut out = [[0f32; 8]; R];
            let mut plain = vec![0u8; row_bytes];
            for l in 0..8 {
                super::packed::plain_row(t, g, l, &mut plain);
                for (o, &r) in out.iter_mut().zip(&rows) {
                    o[l] = if acts.has_q16() {
                        scalar::dot_q16(t, &plain, acts.q16_row(r))
                    } else {
                        scalar::dot_q8(t, &plain, acts.q8_row(r))
                    };
                }
            }
            out
        }
    }
}
