//! ggml tensor types: block sizes, dequantization to f32 and quantization (both for every
//! type listed but Q2_K and Q3_K, which are read only; the encoders live in
//! `super::encode`). Block layouts follow the GGUF/ggml specification.

use half::f16;

/// ggml type ids as stored in GGUF tensor infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

const QK_K: usize = 256;

impl GgmlType {
    /// The type with GGUF id `id`, or None for types we do not read.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }

    /// Whether `export` can write this type (Q2_K and Q3_K are read, never written).
    pub fn can_encode(self) -> bool {
        !matches!(self, GgmlType::Q2K | GgmlType::Q3K)
    }

    /// Bytes for `n` values, or None if `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
    }
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `src` (exactly `out.len()` values of type `t`; the caller checks sizes).
pub fn dequantize(t: GgmlType, src: &[u8], out: &mut [f32]) {
    let bl = t.block_len();
    let bb = t.block_bytes();
    for (blk, o) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
        match t {
            GgmlType::F32 => o[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            GgmlType::F16 => o[0] = h(blk, 0),
            GgmlType::BF16 => o[0] = half::bf16::from_le_bytes([blk[0], blk[1]]).to_f32(),
            GgmlType::Q4_0 => block_q4_0(blk, o),
            GgmlType::Q4_1 => block_q4_1(blk, o),
            GgmlType::Q5_0 => block_q5(blk, o, false),
            GgmlType::Q5_1 => block_q5(blk, o, true),
            GgmlType::Q8_0 => block_q8_0(blk, o),
            GgmlType::Q2K => block_q2_k(blk, o),
            GgmlType::Q3K => {
                let (d, scales, q) = q3_k_parts(blk);
                for (p, y) in o.iter_mut().enumerate() {
                    *y = d * scales[p / 16] as f32 * q[p] as f32;
                }
            }
            GgmlType::Q4K => block_q4_k(blk, o),
            GgmlType::Q5K => block_q5_k(blk, o),
            GgmlType::Q6K => block_q6_k(blk, o),
        }
    }
}

/// d (f16), 16 bytes of nibbles: low nibbles are values 0..16, high nibbles 16..32; value-8.
fn block_q4_0(b: &[u8], o: &mut [f32]) {
    let d = h(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// d, m (f16), nibbles as Q4_0; value*d + m.
fn block_q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    for j in 0..16 {
        let q = b[4 + j];
        o[j] = (q & 0x0f) as f32 * d + m;
        o[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// Q5_0: d, 32 high bits (u32), nibbles; value-16. Q5_1: d, m, high bits, nibbles; value*d+m.
fn block_q5(b: &[u8], o: &mut [f32], with_min: bool) {
    let d = h(b, 0);
    let (m, hb) = if with_min { (h(b, 2), 4) } else { (0.0, 2) };
    let qh = u32::from_le_bytes([b[hb], b[hb + 1], b[hb + 2], b[hb + 3]]);
    let qs = &b[hb + 4..hb + 20];
    for j in 0..16 {
        let hi0 = ((qh >> j) & 1) << 4;
        let hi1 = ((qh >> (j + 16)) & 1) << 4;
        let v0 = ((qs[j] & 0x0f) as u32 | hi0) as i32;
        let v1 = ((qs[j] >> 4) as u32 | hi1) as i32;
        if with_min {
            o[j] = v0 as f32 * d + m;
            o[j + 16] = v1 as f32 * d + m;
        } else {
            o[j] = (v0 - 16) as f32 * d;
            o[j + 16] = (v1 - 16) as f32 * d;
        }
    }
}

/// d (f16), 32 int8 values.
fn block_q8_0(b: &[u8], o: &mut [f32]) {
    let d = h(b, 0);
    for j in 0..32 {
        o[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// 16 scale bytes (low nibble: scale, high nibble: min, one pair per 16 values), 64 bytes of
/// 2-bit values (byte `32h + l` holds values `128h + 32s + l` at bits `2s`), d and dmin (f16):
/// value = d · scale · q − dmin · min.
fn block_q2_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (h(b, 80), h(b, 82));
    let (scales, qs) = (&b[..16], &b[16..80]);
    for (p, y) in o.iter_mut().enumerate() {
        let (half_, s, l) = (p / 128, (p / 32) % 4, p % 32);
        let q = (qs[32 * half_ + l] >> (2 * s)) & 3;
        let sm = scales[p / 16];
        *y = d * (sm & 0x0f) as f32 * q as f32 - dmin * (sm >> 4) as f32;
    }
}

/// One Q3_K block as d, its 16 signed scales (6 bits, −32..=31, one per 16 values) and its
/// 256 values (−4..=3): value = d · scale · q. Layout: 32 bytes of high bits (bit `j` of byte
/// `l` belongs to value `32j + l`; a clear bit subtracts 4), 64 bytes of 2-bit values as in
/// Q2_K, 12 bytes of scales (low nibbles in bytes 0..8, two high bits each in bytes 8..12),
/// d (f16). Also the source of the lossless Q3_K -> Q6_K repacking for inference.
pub fn q3_k_parts(b: &[u8]) -> (f32, [i8; 16], [i8; QK_K]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = h(b, 108);
    let mut scales = [0i8; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i8 - 32;
    }
    let mut q = [0i8; QK_K];
    for (p, v) in q.iter_mut().enumerate() {
        let (half_, s, l) = (p / 128, (p / 32) % 4, p % 32);
        let low = ((qs[32 * half_ + l] >> (2 * s)) & 3) as i8;
        let high_set = (hmask[l] >> (p / 32)) & 1 == 1;
        *v = if high_set { low } else { low - 4 };
    }
    (d, scales, q)
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K/Q5_K.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// d, dmin (f16), 12 scale bytes, 128 bytes of nibbles: 8 sub-blocks of 32 with their own
/// 6-bit scale and min; each 32 bytes of nibbles hold two sub-blocks (low then high).
fn block_q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut o[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            y[l] = d * sc1 * (q[l] & 0x0f) as f32 - dmin * m1;
            y[l + 32] = d * sc2 * (q[l] >> 4) as f32 - dmin * m2;
        }
    }
}

/// As Q4_K plus 32 bytes of fifth bits (bit 2c for the low sub-block of chunk c, 2c+1 high).
fn block_q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut o[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * chunk)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * chunk + 1)) & 1) << 4;
            y[l] = d * sc1 * ((q[l] & 0x0f) | h1) as f32 - dmin * m1;
            y[l + 32] = d * sc2 * ((q[l] >> 4) | h2) as f32 - dmin * m2;
        }
    }
}

/// 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d (f16); value-32.
fn block_q6_k(b: &[u8], o: &mut [f32]) {
    let d = h(b, 208);
    for half_ in 0..2 {
        let ql = &b[64 * half_..64 * half_ + 64];
        let qh = &b[128 + 32 * half_..128 + 32 * half_ + 32];
        let sc = &b[192 + 8 * half_..192 + 8 * half_ + 8];
        let y = &mut o[128 * half_..128 * half_ + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Encodes `src` as type `t` (every type above; `src.len()` a multiple of the block, else
/// None). Q4_K/Q5_K/Q6_K fit their scales by least squares (`encode::fit`).
pub fn quantize(t: GgmlType, src: &[f32]) -> Option<Vec<u8>> {
    super::encode::quantize(t, src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_round_trip() {
        let src: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let q = quantize(GgmlType::Q8_0, &src).unwrap();
        assert_eq!(q.len(), 68);
        let mut back = vec![0.0; 64];
        dequantize(GgmlType::Q8_0, &q, &mut back);
        for (a, b) in src.iter().zip(&back) {
            assert!((a - b).abs() <= 1.6 / 127.0 * 0.51 + 2e-3, "{a} {b}");
        }
    }

    #[test]
    fn q4_0_and_q4_1_round_trips_stay_within_half_a_step() {
        let src: Vec<f32> = (0..256)
            .map(|i| ((i * 53) % 97) as f32 / 31.0 - 1.4)
            .collect();
        for t in [GgmlType::Q4_0, GgmlType::Q4_1] {
            let q = quantize(t, &src).unwrap();
            assert_eq!(q.len(), 8 * t.block_bytes());
            let mut back = vec![0.0; src.len()];
            dequantize(t, &q, &mut back);
            for (blk, (s, b)) in q
                .chunks(t.block_bytes())
                .zip(src.chunks(32).zip(back.chunks(32)))
            {
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32().abs();
                for (x, y) in s.iter().zip(b) {
                    // Half a step, plus the f16 rounding of the minimum (Q4_1) and of d
                    // times the largest level (15 or 8).
                    let bound = d * 0.5 + 16.0 * d * 1e-3 + x.abs() * 1e-3;
                    assert!((x - y).abs() <= bound, "{t:?}: {x} -> {y} (bound {bound})");
                }
            }
        }
    }

    #[test]
    fn hand_made_q4_0_and_q4_1_blocks() {
        // nibble j = j % 16 low, 15 - j high.
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let mut b = f16b(0.5).to_vec();
        b.extend(&qs);
        let mut o = [0.0; 32];
        dequantize(GgmlType::Q4_0, &b, &mut o);
        for j in 0..16 {
            assert_eq!(o[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(o[j + 16], (7.0 - j as f32) * 0.5);
        }
        let mut b = f16b(0.25).to_vec();
        b.extend(f16b(-1.0));
        b.extend(&qs);
        dequantize(GgmlType::Q4_1, &b, &mut o);
        assert_eq!(o[3], 3.0 * 0.25 - 1.0);
        assert_eq!(o[16 + 3], 12.0 * 0.25 - 1.0);
    }

    #[test]
    fn hand_made_q5_blocks() {
        // all nibbles 1, fifth bit set for values 0 and 16+1 only.
        let qh: u32 = 1 | (1 << 17);
        let mut b = f16b(2.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend([0x11u8; 16]);
        let mut o = [0.0; 32];
        dequantize(GgmlType::Q5_0, &b, &mut o);
        assert_eq!(o[0], (17.0 - 16.0) * 2.0);
        assert_eq!(o[1], (1.0 - 16.0) * 2.0);
        assert_eq!(o[17], (17.0 - 16.0) * 2.0);
        let mut b = f16b(2.0).to_vec();
        b.extend(f16b(0.5));
        b.extend(qh.to_le_bytes());
        b.extend([0x11u8; 16]);
        dequantize(GgmlType::Q5_1, &b, &mut o);
        assert_eq!(o[0], 17.0 * 2.0 + 0.5);
        assert_eq!(o[16], 2.5);
    }

    #[test]
    fn hand_made_q6_k_block() {
        // every 6-bit value 33 (=> 1 after -32); scales 1..16; d = 0.5.
        let mut b = vec![0u8; 210];
        for x in &mut b[0..128] {
            *x = 0x11; // low nibbles 1
        }
        for x in &mut b[128..192] {
            *x = 0b10_10_10_10; // high bits 2 -> +32
        }
        for (i, x) in b[192..208].iter_mut().enumerate() {
            *x = (i as i8 + 1) as u8;
        }
        b[208..210].copy_from_slice(&f16b(0.5));
        let mut o = [0.0; 256];
        dequantize(GgmlType::Q6K, &b, &mut o);
        // value l of the first 128 uses scale index l/16 in groups of 32 -> is + 2k
        assert_eq!(o[0], 0.5 * 1.0);
        assert_eq!(o[16], 0.5 * 2.0);
        assert_eq!(o[32], 0.5 * 3.0);
        assert_eq!(o[64], 0.5 * 5.0);
        assert_eq!(o[96 + 16], 0.5 * 8.0);
        assert_eq!(o[128], 0.5 * 9.0);
        assert_eq!(o[255], 0.5 * 16.0);
    }

    #[test]
    fn hand_made_q4_k_and_q5_k_blocks() {
        // scales: sub-blocks 0..4 scale j+1, min 1; 4..8 scale (j+1) using the packed high bits.
        let mut sc = [0u8; 12];
        for j in 0..4 {
            sc[j] = (j + 1) as u8; // scale
            sc[j + 4] = 1; // min
        }
        for j in 4..8 {
            // scale j+1 = low 4 bits in sc[j+4], min 2 in high nibble
            sc[j + 4] = ((j + 1) as u8) | (2 << 4);
        }
        let mut b = f16b(1.0).to_vec();
        b.extend(f16b(0.5));
        b.extend(sc);
        b.extend([0x21u8; 128]); // low nibble 1, high nibble 2
        let mut o = [0.0; 256];
        dequantize(GgmlType::Q4K, &b, &mut o);
        assert_eq!(o[0], 1.0 * 1.0 - 0.5);
        assert_eq!(o[32], 2.0 * 2.0 - 0.5);
        assert_eq!(o[64], 3.0 * 1.0 - 0.5);
        assert_eq!(o[64 * 2], 5.0 * 1.0 - 1.0);
        assert_eq!(o[255], 8.0 * 2.0 - 1.0);
        // Q5_K: same plus all fifth bits of chunk 0 low set.
        let mut b5 = b[..16].to_vec();
        b5.extend([0b0000_0001u8; 32]);
        b5.extend([0x21u8; 128]);
        dequantize(GgmlType::Q5K, &b5, &mut o);
        assert_eq!(o[0], 1.0 * 17.0 - 0.5);
        assert_eq!(o[32], 2.0 * 2.0 - 0.5);
    }

    /// Q3_K blocks packed the way llama.cpp's quantizer lays them out (levels L = q + 4 in
    /// 0..8: bit 2 into the high-bit mask, byte j % 32 bit j / 32; bits 0..2 into byte
    /// 32·(j / 128) + j % 32 at shift 2·((j / 32) % 4); 6-bit scales + 32 split into
    /// nibbles and 2-bit pairs), read back as d · scale · q.
    #[test]
    fn hand_packed_q3_k_block() {
        let scale = |i: usize| (i * 5 % 64) as i32 - 32;
        let level = |j: usize| (j * 7 + j / 16) % 8;
        let mut b = [0u8; 110];
        for j in 0..256 {
            let l = level(j);
            if l > 3 {
                b[j % 32] |= 1 << (j / 32);
            }
            b[32 + 32 * (j / 128) + j % 32] |= ((l & 3) as u8) << (2 * ((j / 32) % 4));
        }
        for i in 0..16 {
            let l = (scale(i) + 32) as u8;
            b[96 + i % 8] |= (l & 0x0f) << (4 * (i / 8));
            b[96 + 8 + i % 4] |= (l >> 4) << (2 * (i / 4));
        }
        b[108..110].copy_from_slice(&f16b(0.25));
        let mut o = [0.0; 256];
        dequantize(GgmlType::Q3K, &b, &mut o);
        for (j, y) in o.iter().enumerate() {
            let want = 0.25 * scale(j / 16) as f32 * (level(j) as i32 - 4) as f32;
            assert_eq!(*y, want, "value {j}");
        }
    }

    /// Q2_K: scale in the low nibble and min in the high nibble of byte j / 16, 2-bit values
    /// at byte 16 + 32·(j / 128) + j % 32, shift 2·((j / 32) % 4); d and dmin at the end.
    #[test]
    fn hand_packed_q2_k_block() {
        let (sc, mn) = (
            |i: usize| (i * 3 % 16) as f32,
            |i: usize| (i * 5 % 16) as f32,
        );
        let level = |j: usize| (j * 3 + j / 32) % 4;
        let mut b = [0u8; 84];
        for (i, byte) in b[..16].iter_mut().enumerate() {
            *byte = (sc(i) as u8) | ((mn(i) as u8) << 4);
        }
        for j in 0..256 {
            b[16 + 32 * (j / 128) + j % 32] |= (level(j) as u8) << (2 * ((j / 32) % 4));
        }
        b[80..82].copy_from_slice(&f16b(0.5));
        b[82..84].copy_from_slice(&f16b(0.125));
        let mut o = [0.0; 256];
        dequantize(GgmlType::Q2K, &b, &mut o);
        for (j, y) in o.iter().enumerate() {
            let want = 0.5 * sc(j / 16) * level(j) as f32 - 0.125 * mn(j / 16);
            assert_eq!(*y, want, "value {j}");
        }
        assert!(
            quantize(GgmlType::Q2K, &[0.0; 256]).is_none(),
            "Q2_K is read only"
        );
    }
}
