//! Encoders of the 32-value block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1. Round to nearest from
//! the block's extremes, as llama.cpp's reference quantizers do without an importance matrix;
//! the scale is taken after its f16 rounding so the levels match what a reader reconstructs.

use half::f16;

fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The value of largest magnitude, with its sign.
fn peak(x: &[f32]) -> f32 {
    x.iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m })
}

/// Q8_0: d = amax/127 (f16), 32 int8 levels.
pub fn encode_q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = f16_round(amax / 127.0);
    let inv = inverse(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    for (o, v) in out[2..34].iter_mut().zip(x) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8 as u8;
    }
}

/// Symmetric 4/5-bit: the peak maps to the bottom level (-8 or -16), the full signed range.
fn symmetric_levels(x: &[f32], half_range: f32) -> (f32, [u8; 32]) {
    let d = f16_round(peak(x) / -half_range);
    let inv = inverse(d);
    let top = 2.0 * half_range - 1.0;
    let q = std::array::from_fn(|j| (x[j] * inv + half_range).round().clamp(0.0, top) as u8);
    (d, q)
}

/// Affine 4/5-bit: min and (max − min)/levels.
fn affine_levels(x: &[f32], top: f32) -> (f32, f32, [u8; 32]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = f16_round((max - min) / top);
    let m = f16_round(min);
    let inv = inverse(d);
    let q = std::array::from_fn(|j| ((x[j] - m) * inv).round().clamp(0.0, top) as u8);
    (d, m, q)
}

fn nibbles(q: &[u8; 32], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
}

/// Fifth bits: bit j of the u32 is the high bit of value j.
fn high_bits(q: &[u8; 32]) -> [u8; 4] {
    let qh = (0..32).fold(0u32, |h, j| h | (((q[j] >> 4) as u32 & 1) << j));
    qh.to_le_bytes()
}

/// Q4_0: d (f16), 16 bytes of nibbles (values 0..16 low, 16..32 high); level − 8.
pub fn encode_q4_0(x: &[f32], out: &mut [u8]) {
    let (d, q) = symmetric_levels(x, 8.0);
    out[0..2].copy_from_slice(&f16_bytes(d));
    nibbles(&q, &mut out[2..18]);
}

/// Q4_1: d, m (f16), nibbles; level·d + m.
pub fn encode_q4_1(x: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine_levels(x, 15.0);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(m));
    nibbles(&q, &mut out[4..20]);
}

/// Q5_0: d (f16), 32 fifth bits (u32), nibbles; level − 16.
pub fn encode_q5_0(x: &[f32], out: &mut [u8]) {
    let (d, q) = symmetric_levels(x, 16.0);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..6].copy_from_slice(&high_bits(&q));
    nibbles(&q, &mut out[6..22]);
}

/// Q5_1: d, m (f16), fifth bits, nibbles; level·d + m.
pub fn encode_q5_1(x: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine_levels(x, 31.0);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(m));
    out[4..8].copy_from_slice(&high_bits(&q));
    nibbles(&q, &mut out[8..24]);
}
