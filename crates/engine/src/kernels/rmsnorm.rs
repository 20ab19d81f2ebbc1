//! RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, per row of `dim`.

use super::{reduce_rows_into, ROW_CHUNK};
use rayon::prelude::*;

/// Writes y and the per-row reciprocal RMS `rstd` (saved for the backward pass).
pub fn forward(y: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let dim = w.len();
    y.par_chunks_mut(dim)
        .zip(rstd.par_iter_mut())
        .zip(x.par_chunks(dim))
        .for_each(|((y, r), x)| {
            let ms = super::dot(x, x) / dim as f32;
            let s = 1.0 / (ms + eps).sqrt();
            *r = s;
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = (x * s) * w;
            }
        });
}

/// y = x * rstd * w with a saved rstd: recomputes the forward output bit for bit.
pub fn apply(y: &mut [f32], x: &[f32], w: &[f32], rstd: &[f32]) {
    let dim = w.len();
    y.par_chunks_mut(dim)
        .zip(rstd.par_iter())
        .zip(x.par_chunks(dim))
        .for_each(|((y, &s), x)| {
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = (x * s) * w;
            }
        });
}

/// dx += dL/dx, dw += dL/dw, given dy, the input x and the saved rstd.
pub fn backward(
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
) {
    let dim = w.len();
    dx.par_chunks_mut(dim)
        .zip(dy.par_chunks(dim))
        .zip(x.par_chunks(dim))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &s)| {
            // xhat = x*s; g = dy*w; dx = s * (g - xhat * mean(g * xhat))
            let mut m = 0.0f32;
            for ((dy, x), w) in dy.iter().zip(x).zip(w) {
                m += dy * w * x;
            }
            let m = m * s * s / dim as f32;
            for (((dx, dy), x), w) in dx.iter_mut().zip(dy).zip(x).zip(w) {
                *dx += s * (dy * w - x * m);
            }
        });
    if let Some(dw) = dw {
        reduce_rows_into(dw, rstd.len(), ROW_CHUNK * 8, |rows, part| {
            for r in rows {
                let s = rstd[r];
                let (dy, x) = (&dy[r * dim..(r + 1) * dim], &x[r * dim..(r + 1) * dim]);
                for ((p, dy), x) in part.iter_mut().zip(dy).zip(x) {
                    *p += dy * x * s;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let (n, d) = (3, 8);
        let mut x = randn(n * d, 1, 1.0);
        let mut w = randn(d, 2, 1.0);
        let g = randn(n * d, 3, 1.0);
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; n * d];
            let mut r = vec![0.0; n];
            super::forward(&mut y, &mut r, x, w, 1e-5);
            weighted_sum(&y, &g)
        };
        let mut y = vec![0.0; n * d];
        let mut r = vec![0.0; n];
        super::forward(&mut y, &mut r, &x, &w, 1e-5);
        let mut dx = vec![0.0; n * d];
        let mut dw = vec![0.0; d];
        super::backward(&mut dx, Some(&mut dw), &g, &x, &w, &r);
        let wc = w.clone();
        let nx = numeric_grad(&mut x, 1e-2, |x| loss(x, &wc));
        let xc = x.clone();
        let nw = numeric_grad(&mut w, 1e-2, |w| loss(&xc, w));
        assert!(rel_l2(&dx, &nx) < 1e-3, "{}", rel_l2(&dx, &nx));
        assert!(rel_l2(&dw, &nw) < 1e-3, "{}", rel_l2(&dw, &nw));
    }
}
