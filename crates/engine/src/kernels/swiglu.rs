//! SwiGLU gate: h = silu(g) * u.

use rayon::prelude::*;

const CHUNK: usize = 4096;

pub fn forward(h: &mut [f32], g: &[f32], u: &[f32]) {
    h.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((h, g), u)| {
            super::simd::swiglu_forward(h, g, u);
        });
}

/// Writes dg and du (overwriting) from dh.
pub fn backward(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(
            dh.par_chunks(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(u.par_chunks(CHUNK)),
        )
        .for_each(|((dg, du), ((dh, g), u))| {
            super::simd::swiglu_backward(dg, du, dh, g, u);
        });
}

#[cfg(test)]
mod tests {
    use crate::kernels::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let n = 40;
        let mut g = randn(n, 1, 2.0);
        let mut u = randn(n, 2, 1.0);
        let w = randn(n, 3, 1.0);
        let loss = |g: &[f32], u: &[f32]| {
            let mut h = vec![0.0; n];
            super::forward(&mut h, g, u);
            weighted_sum(&h, &w)
        };
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        super::backward(&mut dg, &mut du, &w, &g, &u);
        let uc = u.clone();
        let ng = numeric_grad(&mut g, 1e-2, |g| loss(g, &uc));
        let gc = g.clone();
        let nu = numeric_grad(&mut u, 1e-2, |u| loss(&gc, u));
        assert!(rel_l2(&dg, &ng) < 1e-3, "{}", rel_l2(&dg, &ng));
        assert!(rel_l2(&du, &nu) < 1e-3, "{}", rel_l2(&du, &nu));
    }
}
