//! Quantization (f32 → ggml blocks) of every type the GGUF writer emits. Large tensors are
//! split across the CPU's threads by whole blocks; each block is encoded on its own, so the
//! result does not depend on the thread count.

mod blocks32;
pub mod fit;
mod k_quants;

use super::quant::GgmlType;
use half::f16;

/// Below this many values one thread does it all (spawning costs more than it saves).
const PARALLEL_MIN: usize = 1 << 16;

/// Encodes one block of `t` (`x.len() == t.block_len()`, `out.len() == t.block_bytes()`).
fn encode_block(t: GgmlType, x: &[f32], out: &mut [u8]) {
    match t {
        GgmlType::F32 => out.copy_from_slice(&x[0].to_le_bytes()),
        GgmlType::F16 => out.copy_from_slice(&f16::from_f32(x[0]).to_le_bytes()),
        GgmlType::BF16 => out.copy_from_slice(&half::bf16::from_f32(x[0]).to_le_bytes()),
        GgmlType::Q8_0 => blocks32::encode_q8_0(x, out),
        GgmlType::Q4_0 => blocks32::encode_q4_0(x, out),
        GgmlType::Q4_1 => blocks32::encode_q4_1(x, out),
        GgmlType::Q5_0 => blocks32::encode_q5_0(x, out),
        GgmlType::Q5_1 => blocks32::encode_q5_1(x, out),
        GgmlType::Q4K => k_quants::encode_q4_k(x, out),
        GgmlType::Q5K => k_quants::encode_q5_k(x, out),
        GgmlType::Q6K => k_quants::encode_q6_k(x, out),
        GgmlType::Q2K | GgmlType::Q3K => unreachable!("quantize() refuses read-only types"),
    }
}

fn encode_span(t: GgmlType, src: &[f32], out: &mut [u8]) {
    for (x, o) in src
        .chunks_exact(t.block_len())
        .zip(out.chunks_exact_mut(t.block_bytes()))
    {
        encode_block(t, x, o);
    }
}

/// Encodes `src` as type `t`; None when `src.len()` is not a whole number of blocks or `t`
/// is a type we only read.
pub fn quantize(t: GgmlType, src: &[f32]) -> Option<Vec<u8>> {
    if !t.can_encode() {
        return None;
    }
    let bytes = usize::try_from(t.bytes_for(src.len() as u64)?).ok()?;
    let mut out = vec![0u8; bytes];
    let blocks = src.len() / t.block_len();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(blocks.max(1));
    if src.len() < PARALLEL_MIN || threads < 2 {
        encode_span(t, src, &mut out);
        return Some(out);
    }
    let per = blocks.div_ceil(threads);
    std::thread::scope(|s| {
        for (x, o) in src
            .chunks(per * t.block_len())
            .zip(out.chunks_mut(per * t.block_bytes()))
        {
            s.spawn(move || encode_span(t, x, o));
        }
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quant::dequantize;

    /// Weight-like test data: a sum of uniforms (near Gaussian) with a scale that varies by
    /// row segment, plus a few outliers, as trained matrices have.
    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..n)
            .map(|i| {
                let g = (0..4).map(|_| next()).sum::<f32>() - 2.0;
                let scale = 0.02 * (1.0 + (i / 96 % 5) as f32);
                let outlier = if next() < 0.002 { 8.0 } else { 1.0 };
                g * scale * outlier
            })
            .collect()
    }

    fn rel_rms_error(t: GgmlType, x: &[f32]) -> f32 {
        let q = quantize(t, x).expect("whole blocks");
        assert_eq!(q.len() as u64, t.bytes_for(x.len() as u64).unwrap());
        let mut y = vec![0f32; x.len()];
        dequantize(t, &q, &mut y);
        let e: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let r: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        (e / r).sqrt() as f32
    }

    /// Relative RMS error bounds per type on `weights(256·512)`, about 15 % above what the
    /// encoders reach (measured: Q8_0 0.0060, Q6_K 0.0190, Q5_K 0.0367, Q5_1 0.0389,
    /// Q5_0 0.0481, Q4_K 0.0738, Q4_1 0.0805, Q4_0 0.0969). For scale: one level of a 4-bit
    /// grid over ±3σ is 0.4σ, whose rounding error alone is 0.4/√12 ≈ 0.115 of the RMS.
    const BOUNDS: [(GgmlType, f32); 8] = [
        (GgmlType::Q8_0, 0.0070),
        (GgmlType::Q6K, 0.022),
        (GgmlType::Q5K, 0.042),
        (GgmlType::Q5_1, 0.045),
        (GgmlType::Q5_0, 0.055),
        (GgmlType::Q4K, 0.085),
        (GgmlType::Q4_1, 0.093),
        (GgmlType::Q4_0, 0.111),
    ];

    #[test]
    fn round_trip_rms_error_within_each_types_bound() {
        let x = weights(256 * 512, 7);
        let mut got = std::collections::HashMap::new();
        for (t, bound) in BOUNDS {
            let e = rel_rms_error(t, &x);
            eprintln!("{}: relative RMS error {e:.5} (bound {bound})", t.name());
            assert!(e <= bound, "{}: {e} > {bound}", t.name());
            got.insert(t.name(), e);
        }
        // The least-squares K-quants beat the plain types that spend more bits per value
        // (Q4_K 4.5 bits against Q4_1's 5, Q5_K 5.5 against Q5_1's 6).
        assert!(got["Q4_K"] < got["Q4_1"] * 0.97, "{got:?}");
        assert!(got["Q5_K"] < got["Q5_1"] * 0.97, "{got:?}");
        assert!(got["Q6_K"] < got["Q5_K"] * 0.6, "{got:?}");
    }

    #[test]
    fn k_quants_fit_scales_better_than_min_max() {
        // Per super-block, the fitted Q4_K must not lose to the plain min/max grid with the
        // same 6-bit scale quantization: compare with Q4_1's error on the same data, block
        // by block, allowing for Q4_K's coarser (shared, 6-bit) scales.
        let x = weights(256 * 64, 11);
        let mut worse = 0;
        for blk in x.chunks(256) {
            let k = rel_rms_error(GgmlType::Q4K, blk);
            let plain = rel_rms_error(GgmlType::Q4_1, blk);
            worse += usize::from(k > plain * 1.05);
        }
        assert!(
            worse <= 4,
            "{worse} of 64 super-blocks clearly worse than Q4_1"
        );
    }

    #[test]
    fn small_edge_cases_decode() {
        for t in [
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
        ] {
            let n = t.block_len();
            for x in [
                vec![0.0f32; n],
                vec![0.25; n],
                vec![-3.0; n],
                (0..n).map(|i| if i == 5 { 1.0 } else { 0.0 }).collect(),
                (0..n).map(|i| i as f32 - 100.0).collect(),
            ] {
                let q = quantize(t, &x).unwrap();
                let mut y = vec![0f32; n];
                dequantize(t, &q, &mut y);
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in x.iter().zip(&y) {
                    assert!(b.is_finite());
                    // A coarse per-value bound: a quarter of the largest magnitude.
                    assert!(
                        (a - b).abs() <= 0.26 * amax + 1e-6,
                        "{}: {a} -> {b}",
                        t.name()
                    );
                }
            }
        }
        assert!(quantize(GgmlType::Q4K, &[0.0; 255]).is_none());
        assert!(quantize(GgmlType::Q5_0, &[0.0; 33]).is_none());
    }

    #[test]
    fn threads_do_not_change_the_bytes() {
        let x = weights(PARALLEL_MIN * 2 + 256 * 3, 3);
        for t in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0] {
            let mut serial = vec![0u8; t.bytes_for(x.len() as u64).unwrap() as usize];
            encode_span(t, &x, &mut serial);
            assert_eq!(quantize(t, &x).unwrap(), serial, "{}", t.name());
        }
    }
}
