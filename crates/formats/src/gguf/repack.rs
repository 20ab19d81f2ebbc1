//! The GGUF types we read but have no kernel for, turned at load into a type that has one:
//! Q3_K into Q6_K without loss (same d, same 16 scales, the 3-bit values widened to 6 bits),
//! Q2_K into Q8_0 (its values re-quantized to 8 bits: Q2_K has a minimum per 16 values,
//! which no kernel type with 16-value groups carries).

use super::quant::{dequantize, q3_k_parts, quantize, GgmlType};
use super::TensorInfo;
use engine::quant::QType;

/// The kernel type a read-only type becomes, or None for types with kernels of their own.
pub fn target(t: GgmlType) -> Option<QType> {
    match t {
        GgmlType::Q3K => Some(QType::Q6K),
        GgmlType::Q2K => Some(QType::Q8_0),
        _ => None,
    }
}

/// The bytes tensor `t` takes once loaded for inference: its target type's size for the
/// read-only types, else its size in the file.
pub fn loaded_bytes(t: &TensorInfo) -> u64 {
    match target(t.ggml_type) {
        Some(q) => t.n_elements / q.block_len() as u64 * q.block_bytes() as u64,
        None => t.n_bytes,
    }
}

/// `src` (`rows` rows of `cols` values of type `t`, whole blocks) in [`target`]'s layout,
/// row-major and not interleaved. None when `t` has no target or `cols` is not a whole
/// number of blocks.
pub fn repack(t: GgmlType, src: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    let row_in = usize::try_from(t.bytes_for(cols as u64)?).ok()?;
    if src.len() != rows.checked_mul(row_in)? {
        return None;
    }
    match t {
        GgmlType::Q3K => Some(
            src.chunks_exact(t.block_bytes())
                .flat_map(q3_k_block_as_q6_k)
                .collect(),
        ),
        GgmlType::Q2K => {
            let mut row = vec![0f32; cols];
            let q8 = GgmlType::Q8_0;
            let mut out = Vec::with_capacity(rows * cols / q8.block_len() * q8.block_bytes());
            for r in src.chunks_exact(row_in) {
                dequantize(t, r, &mut row);
                out.extend(quantize(q8, &row)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// One Q3_K block (110 bytes) as the Q6_K block (210 bytes) of exactly the same values: the
/// values q (−4..=3) stored as q + 32, the signed scales as they are, d's f16 bytes copied.
fn q3_k_block_as_q6_k(b: &[u8]) -> [u8; 210] {
    let (_, scales, q) = q3_k_parts(b);
    let mut o = [0u8; 210];
    for (p, &v) in q.iter().enumerate() {
        let q6 = (v + 32) as u8;
        let (half_, k, l) = (p / 128, (p % 128) / 32, p % 32);
        o[64 * half_ + 32 * (k % 2) + l] |= (q6 & 0x0f) << (4 * (k / 2));
        o[128 + 32 * half_ + l] |= (q6 >> 4) << (2 * k);
    }
    for (i, s) in scales.iter().enumerate() {
        o[192 + i] = *s as u8;
    }
    o[208..210].copy_from_slice(&b[108..110]);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quant::dequantize;

    /// Deterministic bytes: every bit pattern of the quantized fields, scales included.
    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            })
            .collect()
    }

    /// Random Q3_K blocks with a finite, modest d.
    fn q3_k_blocks(n: usize, seed: u32) -> Vec<u8> {
        let mut b = noise(n * 110, seed);
        for (i, blk) in b.chunks_exact_mut(110).enumerate() {
            let d = half::f16::from_f32(0.001 + 0.0007 * (i % 13) as f32);
            blk[108..110].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    #[test]
    fn q3_k_becomes_q6_k_without_loss() {
        let (rows, cols) = (3, 512);
        let src = q3_k_blocks(rows * cols / 256, 7);
        let q6 = repack(GgmlType::Q3K, &src, rows, cols).expect("repack");
        assert_eq!(q6.len(), rows * cols / 256 * 210);
        let mut want = vec![0f32; rows * cols];
        let mut got = vec![0f32; rows * cols];
        dequantize(GgmlType::Q3K, &src, &mut want);
        dequantize(GgmlType::Q6K, &q6, &mut got);
        assert_eq!(got, want, "Q6_K must hold the very same values");
    }

    /// Q2_K -> Q8_0 re-quantizes: each value moves by at most half a Q8_0 step of its
    /// 32-value block (amax / 127 / 2), plus the f16 rounding of that step times 127.
    #[test]
    fn q2_k_becomes_q8_0_within_half_a_step() {
        let (rows, cols) = (2, 768);
        let mut src = noise(rows * cols / 256 * 84, 11);
        for (i, blk) in src.chunks_exact_mut(84).enumerate() {
            let d = half::f16::from_f32(0.002 + 0.0003 * (i % 5) as f32);
            let dmin = half::f16::from_f32(0.001 + 0.0002 * (i % 3) as f32);
            blk[80..82].copy_from_slice(&d.to_le_bytes());
            blk[82..84].copy_from_slice(&dmin.to_le_bytes());
        }
        let q8 = repack(GgmlType::Q2K, &src, rows, cols).expect("repack");
        let mut want = vec![0f32; rows * cols];
        let mut got = vec![0f32; rows * cols];
        dequantize(GgmlType::Q2K, &src, &mut want);
        dequantize(GgmlType::Q8_0, &q8, &mut got);
        for (w, g) in want.chunks(32).zip(got.chunks(32)) {
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = amax / 127.0 * 0.5 + amax * 1e-3;
            for (a, b) in w.iter().zip(g) {
                assert!((a - b).abs() <= bound, "{a} -> {b} (bound {bound})");
            }
        }
    }

    #[test]
    fn sizes_that_are_not_whole_blocks_are_refused() {
        assert!(repack(GgmlType::Q3K, &[0u8; 110], 1, 128).is_none());
        assert!(repack(GgmlType::Q3K, &[0u8; 109], 1, 256).is_none());
        assert!(repack(GgmlType::Q4K, &[0u8; 144], 1, 256).is_none());
    }
}
