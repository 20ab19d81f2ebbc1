//! Q/K row order at the file boundary.
//!
//! Internally (and in Hugging Face files) rotary embeddings pair dimension `i` with
//! `i + head_dim/2` inside each head ("rotate half"). GGUF and llama2.c store the rows of
//! `wq`/`wk` (and their biases) in Meta's interleaved order, where dimension `2i` pairs with
//! `2i+1`. Within one head, interleaved row `2i + j` is rotate-half row `j*head_dim/2 + i`.

/// Reorders `[n_heads*head_dim, cols]` rows from the interleaved layout to rotate-half.
pub fn interleaved_to_half(w: &mut [f32], n_heads: usize, cols: usize) {
    permute(w, n_heads, cols, true)
}

/// Reorders `[n_heads*head_dim, cols]` rows from rotate-half to the interleaved layout.
pub fn half_to_interleaved(w: &mut [f32], n_heads: usize, cols: usize) {
    permute(w, n_heads, cols, false)
}

/// Reorders `[n_heads*head_dim]` rows of `row_len` items each (e.g. the bytes of quantized
/// rows) from the interleaved layout to rotate-half.
pub fn interleaved_to_half_rows<T: Copy>(w: &mut [T], n_heads: usize, row_len: usize) {
    permute(w, n_heads, row_len, true)
}

fn permute<T: Copy>(w: &mut [T], n_heads: usize, cols: usize, to_half: bool) {
    if n_heads == 0 || cols == 0 {
        return;
    }
    let rows = w.len() / cols;
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let src = w.to_vec();
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let inter = h * head_dim + 2 * i + j;
                let rot = h * head_dim + j * half + i;
                let (dst_row, src_row) = if to_half { (rot, inter) } else { (inter, rot) };
                w[dst_row * cols..(dst_row + 1) * cols]
                    .copy_from_slice(&src[src_row * cols..(src_row + 1) * cols]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_moves_rows() {
        // 2 heads of dim 4, 3 columns; row r holds value r in every column.
        let orig: Vec<f32> = (0..8).flat_map(|r| [r as f32; 3]).collect();
        let mut w = orig.clone();
        interleaved_to_half(&mut w, 2, 3);
        let rows: Vec<f32> = w.chunks(3).map(|r| r[0]).collect();
        // head 0 interleaved rows 0,1,2,3 = (pair0 a, pair0 b, pair1 a, pair1 b)
        assert_eq!(rows, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        half_to_interleaved(&mut w, 2, 3);
        assert_eq!(w, orig);
    }
}
