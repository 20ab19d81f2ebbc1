//! f32 kernels, each with its forward and backward side by side (llm.c style). Buffers are
//! allocated by the caller (the model's `Workspace`) once; kernels only read and write them.
//!
//! Threading: rows are split into fixed chunks, and every reduction across rows is summed
//! chunk by chunk in a fixed order, so results never depend on scheduling.

pub mod attention;
pub mod classifier;
pub mod embedding;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod gradcheck;

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate() {
        let mut xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 * 0.01).collect();
        let want: Vec<f64> = xs.iter().map(|x| (*x as f64).exp()).collect();
        super::exp_in_place(&mut xs);
        for (a, b) in xs.iter().zip(&want) {
            assert!(((*a as f64 - b) / b).abs() < 3e-7, "{a} vs {b}");
        }
    }
}

/// Rows per parallel task for row-wise kernels.
pub(crate) const ROW_CHUNK: usize = 16;

/// Sums `f(chunk_of_rows)` partial vectors of length `len` over fixed chunks of `n_rows`,
/// in chunk order, and adds the total into `acc`. Deterministic for any thread count.
pub(crate) fn reduce_rows_into<F>(acc: &mut [f32], n_rows: usize, chunk: usize, f: F)
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    let len = acc.len();
    let n_chunks = n_rows.div_ceil(chunk);
    let mut partials = vec![0.0f32; n_chunks * len];
    partials
        .par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(c, part)| {
            let start = c * chunk;
            f(start..(start + chunk).min(n_rows), part)
        });
    for part in partials.chunks(len.max(1)) {
        for (a, p) in acc.iter_mut().zip(part) {
            *a += p;
        }
    }
}

/// A raw pointer that may be shared between rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users only write through it to element sets that no other task touches.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole Send + Sync wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without reassociation.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for i in 0..8 {
            acc[i] += a[c * 8 + i] * b[c * 8 + i];
        }
    }
    let mut s = 0.0;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + s
}

/// x = exp(x) for every element, vectorisable (no libm call): exp(x) = 2^n * e^r with
/// n = round(x / ln 2) and a degree-7 Taylor polynomial for e^r, |r| <= ln(2)/2 (relative
/// error below 1e-7). Inputs below -87 give 0-ish, as exp does in f32.
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    for x in xs.iter_mut() {
        let v = x.clamp(-87.0, 88.0);
        let t = v * LOG2E + ROUND;
        let n = t - ROUND;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
        *x = p * scale;
    }
}

/// y += a * x
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
