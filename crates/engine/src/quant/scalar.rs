//! The reference: dequantization of one row, and the scalar dot products of a quantized row
//! with quantized activations (exact integer sums per block, then the block's scales).

#![allow(clippy::needless_range_loop)]

use super::act::{swizzle, BlockQ16, BlockQ8, BlockQ8K};
use super::{QType, QK, QK_K};

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn bf16(b: &[u8], i: usize) -> f32 {
    half::bf16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K super-block.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K / Q5_K: the 8 scales and 8 mins of a super-block.
pub(crate) fn scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

/// The unsigned 5-bit value `j` (0..32) of a Q5_0 / Q5_1 block (ggml: f16 d, [f16 m], u32 qh,
/// 16 bytes of nibbles; low nibbles are values 0..16, high nibbles 16..32, bit `j` of qh is
/// value `j`'s fifth bit).
pub(crate) fn q5_value(t: QType, b: &[u8], j: usize) -> u8 {
    let hb = if t == QType::Q5_1 { 4 } else { 2 };
    let qh = u32::from_le_bytes([b[hb], b[hb + 1], b[hb + 2], b[hb + 3]]);
    let q = b[hb + 4 + j % 16];
    let low = if j < 16 { q & 0x0f } else { q >> 4 };
    low | (((qh >> j) & 1) as u8) << 4
}

/// The unsigned 4/5/6-bit value `i` (0..256) of a K-quant super-block and, for Q6_K, with
/// the 32 offset still in.
fn k_value(t: QType, b: &[u8], i: usize) -> u8 {
    match t {
        QType::Q4K | QType::Q5K => {
            let (chunk, l, high) = (i / 64, i % 32, (i % 64) >= 32);
            let qs = if t == QType::Q4K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            let byte = qs[32 * chunk + l];
            let mut v = if high { byte >> 4 } else { byte & 0x0f };
            if t == QType::Q5K {
                let bit = 2 * chunk + high as usize;
                v |= ((b[16 + l] >> bit) & 1) << 4;
            }
            v
        }
        _ => {
            // Q6_K: halves of 128; inside, quarter q of 32 values.
            let (half, j) = (i / 128, i % 128);
            let (quarter, l) = (j / 32, j % 32);
            let ql = &b[64 * half..64 * half + 64];
            let qh = b[128 + 32 * half + l];
            let low = match quarter {
                0 => ql[l] & 0x0f,
                1 => ql[l + 32] & 0x0f,
                2 => ql[l] >> 4,
                _ => ql[l + 32] >> 4,
            };
            low | (((qh >> (2 * quarter)) & 3) << 4)
        }
    }
}

/// Row `w` (block bytes of `t`) as f32 values.
pub fn dequantize_row(t: QType, w: &[u8], out: &mut [f32]) {
    let bl = t.block_len();
    for (b, o) in w
        .chunks_exact(t.block_bytes())
        .zip(out.chunks_exact_mut(bl))
    {
        match t {
            QType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            QType::F16 => o[0] = f16(b, 0),
            QType::BF16 => o[0] = bf16(b, 0),
            QType::Q8_0 => {
                let d = f16(b, 0);
                for j in 0..QK {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            QType::Q4_0 | QType::Q4_1 => {
                let (d, m, qs) = if t == QType::Q4_0 {
                    (f16(b, 0), -8.0 * f16(b, 0), &b[2..18])
                } else {
                    (f16(b, 0), f16(b, 2), &b[4..20])
                };
                for j in 0..16 {
                    if t == QType::Q4_0 {
                        o[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
                        o[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                    } else {
                        o[j] = (qs[j] & 0x0f) as f32 * d + m;
                        o[j + 16] = (qs[j] >> 4) as f32 * d + m;
                    }
                }
            }
            QType::Q5_0 => {
                let d = f16(b, 0);
                for j in 0..QK {
                    o[j] = (q5_value(t, b, j) as i32 - 16) as f32 * d;
                }
            }
            QType::Q5_1 => {
                let (d, m) = (f16(b, 0), f16(b, 2));
                for j in 0..QK {
                    o[j] = q5_value(t, b, j) as f32 * d + m;
                }
            }
            QType::Q4K | QType::Q5K => {
                let (d, dmin) = (f16(b, 0), f16(b, 2));
                let (sc, m) = scales_mins_k4(&b[4..16]);
                for (i, v) in o.iter_mut().enumerate() {
                    let j = i / 32;
                    *v = d * sc[j] as f32 * k_value(t, b, i) as f32 - dmin * m[j] as f32;
                }
            }
            QType::Q6K => {
                let d = f16(b, 208);
                for (i, v) in o.iter_mut().enumerate() {
                    let sc = b[192 + i / 16] as i8;
                    *v = d * sc as f32 * (k_value(t, b, i) as i32 - 32) as f32;
                }
            }
        }
    }
}

/// `Σ w[i] x[i]` for an F32 / F16 / BF16 row and f32 activations.
pub fn dot_float(t: QType, w: &[u8], x: &[f32]) -> f32 {
    let bb = t.block_bytes();
    let mut s = 0f32;
    for (b, &xi) in w.chunks_exact(bb).zip(x) {
        let wi = match t {
            QType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            QType::F16 => f16(b, 0),
            _ => bf16(b, 0),
        };
        s += wi * xi;
    }
    s
}

/// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 row with 32-block activations: per block the exact
/// integer dot, then `d_w d_a` (and, for Q4_1 / Q5_1, `m_w s_a`).
pub fn dot_q8(t: QType, w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut s = 0f32;
    for (b, ab) in w.chunks_exact(t.block_bytes()).zip(a) {
        let mut isum = 0i32;
        match t {
            QType::Q8_0 => {
                for j in 0..QK {
                    isum += (b[2 + j] as i8) as i32 * ab.qs[j] as i32;
                }
                s += f16(b, 0) * ab.d * isum as f32;
            }
            QType::Q4_0 => {
                for j in 0..16 {
                    isum += ((b[2 + j] & 0x0f) as i32 - 8) * ab.qs[j] as i32;
                    isum += ((b[2 + j] >> 4) as i32 - 8) * ab.qs[j + 16] as i32;
                }
                s += f16(b, 0) * ab.d * isum as f32;
            }
            QType::Q5_0 => {
                for j in 0..QK {
                    isum += (q5_value(t, b, j) as i32 - 16) * ab.qs[j] as i32;
                }
                s += f16(b, 0) * ab.d * isum as f32;
            }
            QType::Q5_1 => {
                for j in 0..QK {
                    isum += q5_value(t, b, j) as i32 * ab.qs[j] as i32;
                }
                s += f16(b, 0) * ab.d * isum as f32 + f16(b, 2) * ab.sm;
            }
            _ => {
                for j in 0..16 {
                    isum += (b[4 + j] & 0x0f) as i32 * ab.qs[j] as i32;
                    isum += (b[4 + j] >> 4) as i32 * ab.qs[j + 16] as i32;
                }
                s += f16(b, 0) * ab.d * isum as f32 + f16(b, 2) * ab.sm;
            }
        }
    }
    s
}

/// K-quant row with 256-block activations: per super-block the integer dots per sub-block
/// times their 6/8-bit scales, the mins (or Q6_K's offset of 32) through the block sums.
pub fn dot_q8k(t: QType, w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (b, ab) in w.chunks_exact(t.block_bytes()).zip(a) {
        match t {
            QType::Q4K | QType::Q5K => {
                let (d, dmin) = (f16(b, 0), f16(b, 2));
                let (sc, m) = scales_mins_k4(&b[4..16]);
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let mut sub = 0i32;
                    for i in 32 * j..32 * j + 32 {
                        sub += k_value(t, b, i) as i32 * ab.qs[i] as i32;
                    }
                    isum += sc[j] as i32 * sub;
                    msum += m[j] as i32 * (ab.bsums[2 * j] as i32 + ab.bsums[2 * j + 1] as i32);
                }
                s += ab.d * (d * isum as f32 - dmin * msum as f32);
            }
            _ => {
                let d = f16(b, 208);
                let mut isum = 0i32;
                for g in 0..QK_K / 16 {
                    let mut sub = 0i32;
                    for i in 16 * g..16 * g + 16 {
                        sub += k_value(t, b, i) as i32 * ab.qs[i] as i32;
                    }
                    isum += (b[192 + g] as i8) as i32 * (sub - 32 * ab.bsums[g] as i32);
                }
                s += ab.d * d * isum as f32;
            }
        }
    }
    s
}

/// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 row with 16-bit 32-block activations: per block the
/// exact integer dot of the unsigned values, then `d_w d_a` (and the minimum, for Q4_0
/// `-8 d_w`, for Q5_0 `-16 d_w`, times `s_a`).
pub fn dot_q16(t: QType, w: &[u8], a: &[BlockQ16]) -> f32 {
    let mut s = 0f32;
    for (b, ab) in w.chunks_exact(t.block_bytes()).zip(a) {
        let y = |j: usize| ab.qs[swizzle(j)] as i32;
        let mut isum = 0i32;
        match t {
            QType::Q8_0 => {
                for j in 0..QK {
                    isum += (b[2 + j] as i8) as i32 * y(j);
                }
                s += f16(b, 0) * ab.d * isum as f32;
            }
            QType::Q5_0 | QType::Q5_1 => {
                for j in 0..QK {
                    isum += q5_value(t, b, j) as i32 * y(j);
                }
                let m = if t == QType::Q5_0 {
                    -16.0 * f16(b, 0)
                } else {
                    f16(b, 2)
                };
                s += f16(b, 0) * ab.d * isum as f32 + m * ab.s;
            }
            _ => {
                let qs = if t == QType::Q4_0 {
                    &b[2..18]
                } else {
                    &b[4..20]
                };
                for j in 0..16 {
                    isum += (qs[j] & 0x0f) as i32 * y(j) + (qs[j] >> 4) as i32 * y(j + 16);
                }
                let m = if t == QType::Q4_0 {
                    -8.0 * f16(b, 0)
                } else {
                    f16(b, 2)
                };
                s += f16(b, 0) * ab.d * isum as f32 + m * ab.s;
            }
        }
    }
    s
}
