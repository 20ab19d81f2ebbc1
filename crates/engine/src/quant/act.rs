//! Activations quantized once per input vector, for the integer dot products: 8-bit values
//! with one scale per block (amax / 127), so the quantization error of each value is at most
//! half a step, `d / 2`; the 8-bit forms round as llama.cpp's Q8_0 / Q8_1 / Q8_K do (values
//! `x·127/amax`, scales of the 32-blocks in f16; Q8_1's sum term stays f32 here, where
//! llama.cpp rounds it to f16). The 16-bit form keeps f32 scales.

use super::{QK, QK_K};

/// What a weight type needs from the activation it multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// The f32 values themselves (F32 / F16 / BF16 weights).
    F32,
    /// Blocks of 32 (Q8_0, Q4_0, Q4_1 weights).
    Q8,
    /// Super-blocks of 256 with sums of each 16 values (K-quant weights).
    Q8K,
}

/// 32 activation values: `x[i] ≈ d * qs[i]`; `s = d * Σ qs`, the term the Q4_0 / Q5_0 offsets
/// meet (kept in f32, so the offset equals the exact integer one); `sm`, the term Q4_1's and
/// Q5_1's minimum meets, rounded to f16 from the unrounded scale as llama.cpp's Q8_1 stores it
/// (its greedy text on those files then follows llama.cpp's).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub sm: f32,
    pub qs: [i8; QK],
}

/// How finely the activations met by the 32-block weights (Q8_0, Q4_0, Q4_1) are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActPrecision {
    /// 8-bit values ([`BlockQ8`], llama.cpp's Q8_0 / Q8_1): the fastest products, relative
    /// error up to 1/254 of each block's largest value.
    #[default]
    I8,
    /// 16-bit values ([`BlockQ16`]): error up to 1/65534 of the block's largest value, at
    /// about twice the integer work of 8 bits.
    I16,
}

/// 32 activation values at 16 bits: `x[j] ≈ d * qs[swizzle(j)]`, `s = d * Σ qs`. Inside
/// every 4 values the order is 0, 2, 1, 3 ([`swizzle`]), so a broadcast 32-bit word pairs
/// values `(4k, 4k+2)` or `(4k+1, 4k+3)` with the even / odd bytes of the weights' 32-bit
/// lanes in `madd`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ16 {
    pub d: f32,
    pub s: f32,
    pub qs: [i16; QK],
}

/// Where value `j` of a block sits in [`BlockQ16::qs`] (its own inverse).
pub fn swizzle(j: usize) -> usize {
    (j & !3) | [0, 2, 1, 3][j & 3]
}

/// 256 activation values: `x[i] ≈ d * qs[i]`; `bsums[g] = Σ qs[16g..16g+16]`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// The 8-bit values of `x` (one block) and its scale, as llama.cpp quantizes an activation
/// block for Q8_0 / Q8_1 (so `--act-bits 8` multiplies the integers llama.cpp does): values
/// `x * (127 / amax)` rounded to the nearest (ties to even, as the vector unit rounds). Returns
/// the scale `amax / 127` (callers round it to f16, as llama.cpp stores it).
fn quantize_block(x: &[f32], qs: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * inv).clamp(-127.0, 127.0).round_ties_even() as i8;
    }
    amax / 127.0
}

/// `v` rounded to f16 and back (the precision of llama.cpp's Q8_0 / Q8_1 block scales).
pub(crate) fn via_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

const EMPTY_Q8: BlockQ8 = BlockQ8 {
    d: 0.0,
    s: 0.0,
    sm: 0.0,
    qs: [0; QK],
};

/// `x` (a multiple of 32 values) in blocks of 32.
pub fn quantize_q8(x: &[f32], out: &mut Vec<BlockQ8>) {
    out.clear();
    out.resize(x.len() / QK, EMPTY_Q8);
    quantize_q8_into(x, out);
}

/// `x` into `out` (`x.len() / 32` blocks), with AVX2 where the CPU has it (the same values as
/// the scalar code: same operations, same rounding).
fn quantize_q8_into(x: &[f32], out: &mut [BlockQ8]) {
    #[cfg(target_arch = "x86_64")]
    if super::dot::level().has_avx2() {
        for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            // SAFETY: AVX2 was detected; `c` holds 32 values.
            unsafe { super::x86::quantize_block_q8(c, b) };
        }
        return;
    }
    quantize_q8_scalar(x, out);
}

/// The reference of [`quantize_q8_into`].
fn quantize_q8_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = quantize_block(c, &mut b.qs);
        let sum = b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32;
        b.d = via_f16(d);
        b.s = b.d * sum;
        b.sm = via_f16(d * sum);
    }
}

/// `x` (a multiple of 256 values) in super-blocks of 256.
pub fn quantize_q8k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    out.resize(x.len() / QK_K, EMPTY_Q8K);
    quantize_q8k_into(x, out);
}

const EMPTY_Q8K: BlockQ8K = BlockQ8K {
    d: 0.0,
    qs: [0; QK_K],
    bsums: [0; QK_K / 16],
};

/// `x` into `out` (`x.len() / 256` super-blocks) as llama.cpp's Q8_K: the scale comes from the
/// value of largest magnitude with its sign (`-127 / max`, so the largest maps to -127), values
/// rounded to the nearest (ties to even) and capped at 127, `d` the reciprocal of that scale.
fn quantize_q8k_into(x: &[f32], out: &mut [BlockQ8K]) {
    for (c, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in c {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        if amax == 0.0 {
            *b = EMPTY_Q8K;
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(c) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

const EMPTY_Q16: BlockQ16 = BlockQ16 {
    d: 0.0,
    s: 0.0,
    qs: [0; QK],
};

/// `x` (a multiple of 32 values) in 16-bit blocks of 32.
pub fn quantize_q16(x: &[f32], out: &mut Vec<BlockQ16>) {
    out.clear();
    out.resize(x.len() / QK, EMPTY_Q16);
    quantize_q16_into(x, out);
}

fn quantize_q16_into(x: &[f32], out: &mut [BlockQ16]) {
    #[cfg(target_arch = "x86_64")]
    if super::dot::level().has_avx2() {
        for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            // SAFETY: AVX2 was detected; `c` holds 32 values.
            unsafe { super::x86::quantize_block_q16(c, b) };
        }
        return;
    }
    quantize_q16_scalar(x, out);
}

/// The reference of [`quantize_q16_into`]: `d = amax / 32767`, clamp, ties to even.
fn quantize_q16_scalar(x: &[f32], out: &mut [BlockQ16]) {
    for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 32767.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (j, &v) in c.iter().enumerate() {
            let q = (v * inv).clamp(-32767.0, 32767.0).round_ties_even() as i16;
            b.qs[swizzle(j)] = q;
            sum += q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// `quantize` applied to each row of `x` (`cols` wide) and its blocks in `out`, the rows
/// spread over the thread pool when there are several (prefill).
fn quantize_rows<B: Send>(
    x: &[f32],
    cols: usize,
    out: &mut [B],
    quantize: impl Fn(&[f32], &mut [B]) + Sync,
) {
    let rows = x.len().checked_div(cols).unwrap_or(0);
    if rows >= 4 && rayon::current_num_threads() > 1 {
        let per_row = out.len() / rows;
        let mut tasks: Vec<_> = out.chunks_mut(per_row).zip(x.chunks(cols)).collect();
        crate::team::for_each_mut(&mut tasks, |(o, r)| quantize(r, o));
    } else {
        quantize(x, out);
    }
}

/// Rows of activations (`[rows, cols]`) prepared in the forms the weights need; each form is
/// computed once and shared by every matrix that reads it (q/k/v, gate/up).
#[derive(Default)]
pub struct QuantizedActs {
    pub rows: usize,
    pub cols: usize,
    /// `[rows, cols / 32]` when some matrix needs it.
    pub q8: Vec<BlockQ8>,
    /// `[rows, cols / 256]` when some matrix needs it.
    pub q8k: Vec<BlockQ8K>,
    /// `[rows, cols / 32]` instead of `q8` at [`ActPrecision::I16`].
    pub q16: Vec<BlockQ16>,
    /// The precision `prepare` uses for the 32-block weights.
    pub precision: ActPrecision,
    has_q8: bool,
    has_q8k: bool,
    has_q16: bool,
}

impl QuantizedActs {
    /// Prepares `x` (`rows` rows of `cols`) for the given kinds (F32 needs nothing). `cols`
    /// must be a multiple of the block of each kind asked for (the matrices guarantee it).
    pub fn prepare(&mut self, x: &[f32], rows: usize, cols: usize, kinds: &[ActKind]) {
        self.rows = rows;
        self.cols = cols;
        let q32 = kinds.contains(&ActKind::Q8) && cols.is_multiple_of(QK);
        self.has_q8 = q32 && self.precision == ActPrecision::I8;
        self.has_q16 = q32 && self.precision == ActPrecision::I16;
        self.has_q8k = kinds.contains(&ActKind::Q8K) && cols.is_multiple_of(QK_K);
        let x = &x[..rows * cols];
        if self.has_q16 {
            self.q16.clear();
            self.q16.resize(rows * (cols / QK), EMPTY_Q16);
            quantize_rows(x, cols, &mut self.q16, quantize_q16_into);
        }
        if self.has_q8 {
            self.q8.clear();
            self.q8.resize(rows * (cols / QK), EMPTY_Q8);
            quantize_rows(x, cols, &mut self.q8, quantize_q8_into);
        }
        if self.has_q8k {
            self.q8k.clear();
            self.q8k.resize(rows * (cols / QK_K), EMPTY_Q8K);
            quantize_rows(x, cols, &mut self.q8k, quantize_q8k_into);
        }
    }

    /// The 32-blocks of row `r`.
    pub fn q8_row(&self, r: usize) -> &[BlockQ8] {
        let n = self.cols / QK;
        &self.q8[r * n..(r + 1) * n]
    }

    /// The 16-bit 32-blocks of row `r`.
    pub fn q16_row(&self, r: usize) -> &[BlockQ16] {
        let n = self.cols / QK;
        &self.q16[r * n..(r + 1) * n]
    }

    /// Whether the 32-block weights meet 16-bit activations (prepared at
    /// [`ActPrecision::I16`]).
    pub fn has_q16(&self) -> bool {
        self.has_q16
    }

    /// The 256-blocks of row `r`.
    pub fn q8k_row(&self, r: usize) -> &[BlockQ8K] {
        let n = self.cols / QK_K;
        &self.q8k[r * n..(r + 1) * n]
    }

    pub fn has(&self, kind: ActKind) -> bool {
        match kind {
            ActKind::F32 => true,
            ActKind::Q8 => self.has_q8 || self.has_q16,
            ActKind::Q8K => self.has_q8k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_error_is_at_most_half_a_step_of_the_f16_scale() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let mut b = Vec::new();
        quantize_q8(&x, &mut b);
        for (blk, c) in b.iter().zip(x.chunks(QK)) {
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            // llama.cpp's scheme: values of x * 127 / amax, the scale stored in f16.
            assert_eq!(via_f16(blk.d), blk.d);
            assert!((blk.d - amax / 127.0).abs() <= amax / 127.0 / 2048.0);
            for (q, v) in blk.qs.iter().zip(c) {
                assert_eq!(*q as f32, (v * (127.0 / amax)).round_ties_even());
                // Half a step, plus the f16 rounding of the scale at |q| <= 127.
                assert!((*q as f32 * blk.d - v).abs() <= blk.d * (0.5 + 127.0 / 2048.0));
            }
            // The sum term stays f32 (the Q4_0 / Q5_0 kernels take their offset through it,
            // which must equal the exact integer offset).
            let s: i32 = blk.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(blk.s, blk.d * s as f32);
            // The minimum's term as llama.cpp's Q8_1 stores it: the unrounded scale times
            // the sum, rounded to f16.
            assert_eq!(blk.sm, via_f16(amax / 127.0 * s as f32));
        }
    }

    #[test]
    fn q8k_maps_the_largest_value_to_minus_127_and_sums_each_16() {
        let mut x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        x[300] = 2.0; // the second block's largest magnitude is positive
        let mut k = Vec::new();
        quantize_q8k(&x, &mut k);
        assert_eq!(k.len(), 2);
        assert_eq!(k[1].qs[300 - 256], -127);
        assert!(k[1].d < 0.0 && (k[1].d + 2.0 / 127.0).abs() < 1e-7);
        for (blk, c) in k.iter().zip(x.chunks(QK_K)) {
            for (q, v) in blk.qs.iter().zip(c) {
                assert!((*q as f32 * blk.d - v).abs() <= blk.d.abs() * 0.5 + 1e-7);
            }
            for g in 0..16 {
                let s: i32 = blk.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
                assert_eq!(blk.bsums[g] as i32, s);
            }
        }
        quantize_q8k(&[0.0; 256], &mut k);
        assert!(k[0].d == 0.0 && k[0].qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn vector_quantization_equals_the_scalar_one() {
        // Values with exact halves after scaling (ties), a zero block and large magnitudes.
        let mut x: Vec<f32> = (0..32 * 9)
            .map(|i| ((i * 53 % 211) as f32 - 105.0) * 0.37)
            .collect();
        x[32..64].fill(0.0);
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = i as f32 - 15.5; // amax 15.5: steps of 15.5/127, many near-ties
        }
        let mut fast = vec![EMPTY_Q8; 9];
        let mut slow = vec![EMPTY_Q8; 9];
        quantize_q8_into(&x, &mut fast);
        quantize_q8_scalar(&x, &mut slow);
        for (a, b) in fast.iter().zip(&slow) {
            assert_eq!(a.qs, b.qs);
            assert_eq!(a.d.to_bits(), b.d.to_bits());
            assert_eq!(a.s.to_bits(), b.s.to_bits());
            assert_eq!(a.sm.to_bits(), b.sm.to_bits());
        }
    }

    #[test]
    fn q16_vector_quantization_equals_the_scalar_one_and_is_fine() {
        let mut x: Vec<f32> = (0..32 * 5)
            .map(|i| ((i * 53 % 211) as f32 - 105.0) * 0.37)
            .collect();
        x[32..64].fill(0.0);
        let mut fast = vec![EMPTY_Q16; 5];
        let mut slow = vec![EMPTY_Q16; 5];
        quantize_q16_into(&x, &mut fast);
        quantize_q16_scalar(&x, &mut slow);
        for ((a, b), c) in fast.iter().zip(&slow).zip(x.chunks(QK)) {
            assert_eq!(a.qs, b.qs);
            assert_eq!(a.d.to_bits(), b.d.to_bits());
            assert_eq!(a.s.to_bits(), b.s.to_bits());
            for (j, &v) in c.iter().enumerate() {
                assert!((a.qs[swizzle(j)] as f32 * a.d - v).abs() <= a.d * 0.5 + 1e-6);
            }
        }
        assert!((0..32).all(|j| swizzle(swizzle(j)) == j));
    }

    #[test]
    fn zero_vector_has_zero_scale() {
        let mut b = Vec::new();
        quantize_q8(&[0.0; 32], &mut b);
        assert_eq!(b[0].d, 0.0);
        assert!(b[0].qs.iter().all(|&q| q == 0));
    }
}
