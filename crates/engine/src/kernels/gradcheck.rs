//! Finite-difference gradient checking for kernel tests: central differences in f64 of a
//! scalar function computed in f32, compared by relative L2 error.

/// Relative L2 error ||a - b|| / max(||b||, tiny).
pub(crate) fn rel_l2(a: &[f32], b: &[f64]) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - y) * (*x as f64 - y);
        den += y * y;
    }
    num.sqrt() / den.sqrt().max(1e-12)
}

/// Numerical gradient of `f` with respect to `x` (every element; keep tensors small).
pub(crate) fn numeric_grad(x: &mut [f32], eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut g = vec![0.0; x.len()];
    for i in 0..x.len() {
        let old = x[i];
        x[i] = old + eps;
        let up = f(x);
        x[i] = old - eps;
        let down = f(x);
        x[i] = old;
        g[i] = (up - down) / (2.0 * (eps as f64));
    }
    g
}

/// A fixed random "upstream gradient" and the loss sum(w * y) it defines.
pub(crate) fn weighted_sum(y: &[f32], w: &[f32]) -> f64 {
    y.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}

pub(crate) fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = crate::rng::Rng::new(seed);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}
