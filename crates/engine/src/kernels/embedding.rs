//! Token embedding lookup.

use rayon::prelude::*;

/// out[i] = table[tokens[i]] (ids already checked against the vocabulary).
pub fn forward(out: &mut [f32], tokens: &[u32], table: &[f32], dim: usize) {
    out.par_chunks_mut(dim)
        .zip(tokens.par_iter())
        .for_each(|(row, &t)| {
            let t = t as usize;
            row.copy_from_slice(&table[t * dim..(t + 1) * dim]);
        });
}

/// dtable[tokens[i]] += dout[i], in token order (sequential: deterministic and cheap).
pub fn backward(dtable: &mut [f32], dout: &[f32], tokens: &[u32], dim: usize) {
    for (row, &t) in dout.chunks(dim).zip(tokens) {
        let t = t as usize;
        super::axpy(&mut dtable[t * dim..(t + 1) * dim], 1.0, row);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backward_scatters_into_used_rows() {
        let table: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let mut out = vec![0.0; 6];
        super::forward(&mut out, &[2, 0], &table, 3);
        assert_eq!(out, [6.0, 7.0, 8.0, 0.0, 1.0, 2.0]);
        let mut d = vec![0.0; 12];
        super::backward(&mut d, &[1.0; 9], &[1, 1, 3], 3);
        assert_eq!(d, [0., 0., 0., 2., 2., 2., 0., 0., 0., 1., 1., 1.]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        use crate::kernels::gradcheck::*;
        let (v, d) = (5, 3);
        let tokens = [4u32, 1, 4, 0];
        let mut table = randn(v * d, 1, 1.0);
        let g = randn(tokens.len() * d, 2, 1.0);
        let mut dtable = vec![0.0; v * d];
        super::backward(&mut dtable, &g, &tokens, d);
        let num = numeric_grad(&mut table, 1e-2, |t| {
            let mut out = vec![0.0; tokens.len() * d];
            super::forward(&mut out, &tokens, t, d);
            weighted_sum(&out, &g)
        });
        assert!(rel_l2(&dtable, &num) < 1e-4);
    }
}
