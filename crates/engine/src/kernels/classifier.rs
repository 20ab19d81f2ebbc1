//! Output classifier fused with softmax cross-entropy, processed in chunks of rows so that
//! the full `[tokens, vocab]` logits never exist at once: per chunk, logits -> loss ->
//! dlogits (in place) -> dx and dW, then the buffer is reused.

use crate::frozen::Frozen;
use crate::gemm::sgemm;
use rayon::prelude::*;

/// Target id that contributes neither loss nor gradient.
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Sizes and buffers of one classifier pass.
pub struct Classifier<'a> {
    pub vocab: usize,
    pub dim: usize,
    /// Rows per chunk; `logits` holds `chunk * vocab` values.
    pub chunk: usize,
    pub logits: &'a mut [f32],
}

/// The gradient outputs of a training pass.
pub struct ClassifierGrads<'a> {
    /// `[n, dim]`, overwritten.
    pub dx: &'a mut [f32],
    /// `[vocab, dim]`, accumulated; None when the classifier is frozen.
    pub dw: Option<&'a mut [f32]>,
}

/// The classifier matrix `[vocab, dim]`: trainable f32 values, or a frozen matrix (LoRA
/// runs; possibly quantized) multiplied tile by tile with the scratch buffer given.
pub enum ClassifierWeights<'w> {
    F32(&'w [f32]),
    Frozen(Frozen<'w>, &'w mut Vec<f32>),
}

impl ClassifierWeights<'_> {
    /// logits `[rows, vocab]` = x W^T.
    fn logits(&mut self, logits: &mut [f32], x: &[f32], rows: usize, v: usize, d: usize) {
        match self {
            ClassifierWeights::F32(w) => {
                sgemm(false, true, rows, v, d, 1.0, x, d, w, d, 0.0, logits, v)
            }
            ClassifierWeights::Frozen(w, scratch) => w.xwt(logits, x, rows, 0.0, scratch),
        }
    }

    /// dx `[rows, dim]` = dlogits W.
    fn dx(&mut self, dx: &mut [f32], dlogits: &[f32], rows: usize, v: usize, d: usize) {
        match self {
            ClassifierWeights::F32(w) => {
                sgemm(false, false, rows, d, v, 1.0, dlogits, v, w, d, 0.0, dx, d)
            }
            ClassifierWeights::Frozen(w, scratch) => w.dyw(dx, dlogits, rows, false, scratch),
        }
    }
}

impl Classifier<'_> {
    /// Sum of -log softmax(x W^T)[target] over rows whose target is not IGNORE_INDEX, and
    /// how many such rows there are. With `grads`, also the gradient of that sum.
    /// Targets must be below `vocab` or IGNORE_INDEX (checked by the caller).
    pub fn run(
        &mut self,
        x: &[f32],
        w: &[f32],
        targets: &[u32],
        grads: Option<ClassifierGrads<'_>>,
    ) -> (f64, usize) {
        self.run_with(x, ClassifierWeights::F32(w), targets, grads)
    }

    /// `run` with any classifier weights; a frozen matrix takes no `dw`.
    pub fn run_with(
        &mut self,
        x: &[f32],
        mut w: ClassifierWeights<'_>,
        targets: &[u32],
        mut grads: Option<ClassifierGrads<'_>>,
    ) -> (f64, usize) {
        let (v, d) = (self.vocab, self.dim);
        let n = targets.len();
        let mut total = 0.0f64;
        let mut count = 0usize;
        let mut row_loss = vec![0.0f64; self.chunk];
        for start in (0..n).step_by(self.chunk) {
            let rows = self.chunk.min(n - start);
            let xc = &x[start * d..(start + rows) * d];
            let tc = &targets[start..start + rows];
            let logits = &mut self.logits[..rows * v];
            w.logits(logits, xc, rows, v, d);
            let backward = grads.is_some();
            logits
                .par_chunks_mut(v)
                .zip(tc.par_iter())
                .zip(row_loss[..rows].par_iter_mut())
                .for_each(|((row, &t), loss)| {
                    if t == IGNORE_INDEX {
                        *loss = 0.0;
                        if backward {
                            row.fill(0.0);
                        }
                        return;
                    }
                    let t = t as usize;
                    let max = super::simd::max(row);
                    let target_logit = row[t];
                    let sum = super::simd::exp_sub_sum(row, max) as f64;
                    if backward {
                        super::simd::scale(row, (1.0 / sum) as f32);
                        row[t] -= 1.0;
                    }
                    *loss = max as f64 + sum.ln() - target_logit as f64;
                });
            for (l, t) in row_loss[..rows].iter().zip(tc) {
                if *t != IGNORE_INDEX {
                    total += l;
                    count += 1;
                }
            }
            if let Some(g) = grads.as_mut() {
                let dx = &mut g.dx[start * d..(start + rows) * d];
                w.dx(dx, logits, rows, v, d);
                if let (Some(dw), ClassifierWeights::F32(_)) = (g.dw.as_deref_mut(), &w) {
                    sgemm(true, false, v, d, rows, 1.0, logits, v, xc, d, 1.0, dw, d);
                }
            }
        }
        (total, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences_with_masked_rows() {
        let (n, d, v) = (5, 4, 7);
        let mut x = randn(n * d, 1, 1.0);
        let mut w = randn(v * d, 2, 1.0);
        let targets = [3, IGNORE_INDEX, 0, 6, 2];
        let mut buf = vec![0.0; 2 * v];
        let mut loss = |x: &[f32], w: &[f32]| {
            let mut c = Classifier {
                vocab: v,
                dim: d,
                chunk: 2,
                logits: &mut buf,
            };
            c.run(x, w, &targets, None).0
        };
        let (l, _) = {
            let mut b2 = vec![0.0; 2 * v];
            let mut c = Classifier {
                vocab: v,
                dim: d,
                chunk: 2,
                logits: &mut b2,
            };
            c.run(&x, &w, &targets, None)
        };
        let mut dx = vec![5.0; n * d];
        let mut dw = vec![0.0; v * d];
        let mut b3 = vec![0.0; 2 * v];
        let mut c = Classifier {
            vocab: v,
            dim: d,
            chunk: 2,
            logits: &mut b3,
        };
        let (l2, count) = c.run(
            &x,
            &w,
            &targets,
            Some(ClassifierGrads {
                dx: &mut dx,
                dw: Some(&mut dw),
            }),
        );
        assert_eq!(count, 4);
        assert!((l - l2).abs() < 1e-6);
        let wc = w.clone();
        let nx = numeric_grad(&mut x, 1e-2, |x| loss(x, &wc));
        let xc = x.clone();
        let nw = numeric_grad(&mut w, 1e-2, |w| loss(&xc, w));
        assert!(rel_l2(&dx, &nx) < 1e-3, "{}", rel_l2(&dx, &nx));
        assert!(rel_l2(&dw, &nw) < 1e-3, "{}", rel_l2(&dw, &nw));
        assert!(dx[d..2 * d].iter().all(|g| *g == 0.0));
    }
}
