//! SwiGLU gate: h = silu(g) * u.

use rayon::prelude::*;

const CHUNK: usize = 4096;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn forward(h: &mut [f32], g: &[f32], u: &[f32]) {
    h.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((h, g), u)| {
            for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
                *h = g * sigmoid(*g) * u;
            }
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
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = dh[i] * silu;
                dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
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
