//! Rotary position embeddings, Hugging Face "rotate half" pairing: inside each head,
//! dimension i rotates with i + head_dim/2.

use rayon::prelude::*;

/// cos/sin tables `[seq, head_dim/2]`, computed the way transformers does (f32 inverse
/// frequencies times f32 positions), so angles round identically.
pub struct RopeTable {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(seq: usize, head_dim: usize, theta: f64) -> RopeTable {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for t in 0..seq {
            for f in &inv {
                let a = (t as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }
}

/// Rotates `x` `[rows, n_heads * head_dim]` in place; row r is at position r % seq.
/// `inverse` applies the transposed rotation (the backward pass).
pub fn apply(x: &mut [f32], table: &RopeTable, seq: usize, n_heads: usize, inverse: bool) {
    let half = table.half;
    let width = n_heads * 2 * half;
    x.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let t = r % seq;
        let cos = &table.cos[t * half..(t + 1) * half];
        let sin = &table.sin[t * half..(t + 1) * half];
        for head in row.chunks_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                let s = if inverse { -sin[i] } else { sin[i] };
                a[i] = x1 * cos[i] - x2 * s;
                b[i] = x2 * cos[i] + x1 * s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gradcheck::*;

    #[test]
    fn backward_is_the_gradient_of_forward() {
        let (seq, heads, hd) = (5, 2, 8);
        let table = RopeTable::new(seq, hd, 10000.0);
        let mut x = randn(seq * heads * hd, 1, 1.0);
        let w = randn(x.len(), 2, 1.0);
        let mut dx = w.clone();
        apply(&mut dx, &table, seq, heads, true);
        let num = numeric_grad(&mut x, 1e-2, |x| {
            let mut y = x.to_vec();
            apply(&mut y, &table, seq, heads, false);
            weighted_sum(&y, &w)
        });
        assert!(rel_l2(&dx, &num) < 1e-3, "{}", rel_l2(&dx, &num));
        // and forward then inverse is the identity
        let mut y = x.clone();
        apply(&mut y, &table, seq, heads, false);
        apply(&mut y, &table, seq, heads, true);
        assert!(rel_l2(&y, &x.iter().map(|v| *v as f64).collect::<Vec<_>>()) < 1e-6);
    }
}
