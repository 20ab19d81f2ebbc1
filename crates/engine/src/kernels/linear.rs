//! Linear layer y = x W^T (+ b), W row-major `[out, in]` as in PyTorch.

use super::{reduce_rows_into, ROW_CHUNK};
use crate::gemm::sgemm;

/// y = x W^T + b (y is overwritten). x `[n, in]`, y `[n, out]`.
pub fn forward(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    d_in: usize,
    d_out: usize,
) {
    sgemm(
        false, true, n, d_out, d_in, 1.0, x, d_in, w, d_in, 0.0, y, d_out,
    );
    if let Some(b) = b {
        add_bias(y, b, d_out);
    }
}

/// y[i] += b for every row i of y `[n, d_out]`.
pub fn add_bias(y: &mut [f32], b: &[f32], d_out: usize) {
    for row in y.chunks_mut(d_out) {
        super::axpy(row, 1.0, b);
    }
}

/// dx (+= when `accumulate`, else =) dy W.
pub fn backward_input(
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    accumulate: bool,
) {
    let beta = if accumulate { 1.0 } else { 0.0 };
    sgemm(
        false, false, n, d_in, d_out, 1.0, dy, d_out, w, d_in, beta, dx, d_in,
    );
}

/// dW += dy^T x; db += sum of dy rows.
pub fn backward_weight(
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    n: usize,
    d_in: usize,
    d_out: usize,
) {
    sgemm(
        true, false, d_out, d_in, n, 1.0, dy, d_out, x, d_in, 1.0, dw, d_in,
    );
    if let Some(db) = db {
        reduce_rows_into(db, n, ROW_CHUNK * 8, |rows, part| {
            for r in rows {
                super::axpy(part, 1.0, &dy[r * d_out..(r + 1) * d_out]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let (n, di, dout) = (3, 5, 4);
        let mut x = randn(n * di, 1, 1.0);
        let mut w = randn(dout * di, 2, 1.0);
        let mut b = randn(dout, 3, 1.0);
        let g = randn(n * dout, 4, 1.0);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; n * dout];
            super::forward(&mut y, x, w, Some(b), n, di, dout);
            weighted_sum(&y, &g)
        };
        let mut dx = vec![1.0; n * di];
        super::backward_input(&mut dx, &g, &w, n, di, dout, false);
        let (mut dw, mut db) = (vec![0.0; dout * di], vec![0.0; dout]);
        super::backward_weight(&mut dw, Some(&mut db), &g, &x, n, di, dout);
        let (wc, bc) = (w.clone(), b.clone());
        let nx = numeric_grad(&mut x, 1e-2, |x| loss(x, &wc, &bc));
        let xc = x.clone();
        let nw = numeric_grad(&mut w, 1e-2, |w| loss(&xc, w, &bc));
        let wc = w.clone();
        let nb = numeric_grad(&mut b, 1e-2, |b| loss(&xc, &wc, b));
        assert!(rel_l2(&dx, &nx) < 1e-3);
        assert!(rel_l2(&dw, &nw) < 1e-3);
        assert!(rel_l2(&db, &nb) < 1e-3);
    }
}
