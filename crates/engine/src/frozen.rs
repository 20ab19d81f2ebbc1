//! The frozen base of a LoRA run: its matrices as f32 values or, for QLoRA, in the block
//! format of a quantized GGUF file, multiplied by dequantizing tiles of rows on the fly.
//!
//! A product with a frozen matrix W `[rows, cols]` runs over tiles of whole rows: each tile
//! is handed to the same f32 GEMM, as a slice of the values (f32 base) or dequantized into a
//! scratch buffer (quantized base). Dequantization is exact in f32 and the tiling depends only
//! on the shape, so a quantized base and its dequantized f32 copy run the very same GEMM calls
//! on the same operand values: their losses and gradients are bit-identical. A matrix of at
//! most `TILE_FLOATS` values is one tile, which is exactly the call the trainable (full
//! fine-tuning) path makes.

use crate::config::ModelConfig;
use crate::gemm::sgemm;
use crate::params::Params;
use crate::quant::{QMatrix, QType, QuantModel};
use rayon::prelude::*;

/// Largest tile, in f32 values (16 MiB): a bound on the dequantization scratch.
pub const TILE_FLOATS: usize = 1 << 22;

/// Rows per dequantization task.
const ROWS_PER_TASK: usize = 8;

/// Rows of a `[rows, cols]` frozen matrix that one GEMM call takes.
pub fn tile_rows(rows: usize, cols: usize) -> usize {
    if rows.saturating_mul(cols) <= TILE_FLOATS {
        rows.max(1)
    } else {
        // Whole multiples of 16 rows (the GEMM's register blocks) where the tile allows.
        let fit = (TILE_FLOATS / cols.max(1)).max(1);
        if fit >= 16 {
            fit / 16 * 16
        } else {
            fit
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Store<'a> {
    F32(&'a [f32]),
    Quant(&'a QMatrix),
}

/// A frozen `[rows, cols]` weight matrix (row-major, `[out, in]`).
#[derive(Clone, Copy, Debug)]
pub struct Frozen<'a> {
    store: Store<'a>,
    rows: usize,
    cols: usize,
    /// Rows per GEMM call.
    tile: usize,
}

impl<'a> Frozen<'a> {
    /// f32 values `[rows, cols]`. With `tiled`, products run over the same tiles as a
    /// quantized matrix of this shape would (LoRA runs); without, as one GEMM call.
    pub fn f32(w: &'a [f32], rows: usize, cols: usize, tiled: bool) -> Frozen<'a> {
        debug_assert_eq!(w.len(), rows * cols);
        Frozen {
            store: Store::F32(w),
            rows,
            cols,
            tile: if tiled { tile_rows(rows, cols) } else { rows },
        }
    }

    /// A matrix in a block format.
    pub fn quant(q: &'a QMatrix) -> Frozen<'a> {
        Frozen {
            store: Store::Quant(q),
            rows: q.rows(),
            cols: q.cols(),
            tile: tile_rows(q.rows(), q.cols()),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `r0..r0 + len` as f32: a slice of the values, or the blocks dequantized into
    /// `scratch` (grown when too short).
    fn tile<'s>(&self, r0: usize, len: usize, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        'a: 's,
    {
        let c = self.cols;
        match self.store {
            Store::F32(w) => &w[r0 * c..(r0 + len) * c],
            Store::Quant(q) => {
                if scratch.len() < len * c {
                    scratch.resize(len * c, 0.0);
                }
                let out = &mut scratch[..len * c];
                out.par_chunks_mut(c)
                    .with_min_len(ROWS_PER_TASK)
                    .enumerate()
                    .for_each(|(i, row)| q.dequantize_row_into(r0 + i, row));
                out
            }
        }
    }

    /// Row `r` as f32 into `out` (`cols` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match self.store {
            Store::F32(w) => out.copy_from_slice(&w[r * self.cols..(r + 1) * self.cols]),
            Store::Quant(q) => q.dequantize_row_into(r, out),
        }
    }

    /// y = x W^T + beta y. x `[n, cols]`, y `[n, rows]`.
    pub fn xwt(&self, y: &mut [f32], x: &[f32], n: usize, beta: f32, scratch: &mut Vec<f32>) {
        let (rows, cols) = (self.rows, self.cols);
        let mut r0 = 0;
        while r0 < rows {
            let len = self.tile.min(rows - r0);
            let w = self.tile(r0, len, scratch);
            sgemm(
                false,
                true,
                n,
                len,
                cols,
                1.0,
                x,
                cols,
                w,
                cols,
                beta,
                &mut y[r0..],
                rows,
            );
            r0 += len;
        }
    }

    /// dx (+= when `accumulate`, else =) dy W. dy `[n, rows]`, dx `[n, cols]`.
    pub fn dyw(
        &self,
        dx: &mut [f32],
        dy: &[f32],
        n: usize,
        accumulate: bool,
        scratch: &mut Vec<f32>,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let mut r0 = 0;
        while r0 < rows {
            let len = self.tile.min(rows - r0);
            let w = self.tile(r0, len, scratch);
            let beta = if accumulate || r0 > 0 { 1.0 } else { 0.0 };
            sgemm(
                false,
                false,
                n,
                cols,
                len,
                1.0,
                &dy[r0..],
                rows,
                w,
                cols,
                beta,
                dx,
                cols,
            );
            r0 += len;
        }
    }

    /// out[i] = W[tokens[i]] (ids already checked against `rows`).
    pub fn gather_rows(&self, out: &mut [f32], tokens: &[u32]) {
        out.par_chunks_mut(self.cols)
            .zip(tokens.par_iter())
            .for_each(|(row, &t)| self.row_into(t as usize, row));
    }
}

/// The weights a forward pass reads: f32 `Params`, or a quantized model (a frozen QLoRA base).
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    F32(&'a Params),
    Quant(&'a QuantModel),
}

impl<'a> From<&'a Params> for Base<'a> {
    fn from(p: &'a Params) -> Self {
        Base::F32(p)
    }
}

impl<'a> From<&'a QuantModel> for Base<'a> {
    fn from(q: &'a QuantModel) -> Self {
        Base::Quant(q)
    }
}

/// One layer of a base: norms and biases f32, matrices frozen.
pub struct BaseLayer<'a> {
    pub attn_norm: &'a [f32],
    pub wq: Frozen<'a>,
    pub wk: Frozen<'a>,
    pub wv: Frozen<'a>,
    pub bq: Option<&'a [f32]>,
    pub bk: Option<&'a [f32]>,
    pub bv: Option<&'a [f32]>,
    pub wo: Frozen<'a>,
    pub ffn_norm: &'a [f32],
    pub w_gate: Frozen<'a>,
    pub w_up: Frozen<'a>,
    pub w_down: Frozen<'a>,
}

impl<'a> Base<'a> {
    pub fn config(&self) -> &'a ModelConfig {
        match self {
            Base::F32(p) => &p.config,
            Base::Quant(q) => &q.config,
        }
    }

    /// The f32 parameters, when the base has them (full training needs them).
    pub fn params(&self) -> Option<&'a Params> {
        match self {
            Base::F32(p) => Some(p),
            Base::Quant(_) => None,
        }
    }

    /// Layer `l`'s tensors; f32 matrices tiled like quantized ones when `tiled`.
    pub fn layer(&self, l: usize, tiled: bool) -> BaseLayer<'a> {
        let cfg = self.config();
        let (d, kv, h) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
        match self {
            Base::F32(p) => {
                let w = p.layer(l);
                let f = |m: &'a [f32], rows, cols| Frozen::f32(m, rows, cols, tiled);
                BaseLayer {
                    attn_norm: w.attn_norm,
                    wq: f(w.wq, d, d),
                    wk: f(w.wk, kv, d),
                    wv: f(w.wv, kv, d),
                    bq: w.bq,
                    bk: w.bk,
                    bv: w.bv,
                    wo: f(w.wo, d, d),
                    ffn_norm: w.ffn_norm,
                    w_gate: f(w.w_gate, h, d),
                    w_up: f(w.w_up, h, d),
                    w_down: f(w.w_down, d, h),
                }
            }
            Base::Quant(q) => {
                let w = &q.layers[l];
                BaseLayer {
                    attn_norm: &w.attn_norm,
                    wq: Frozen::quant(&w.wq),
                    wk: Frozen::quant(&w.wk),
                    wv: Frozen::quant(&w.wv),
                    bq: w.bq.as_deref(),
                    bk: w.bk.as_deref(),
                    bv: w.bv.as_deref(),
                    wo: Frozen::quant(&w.wo),
                    ffn_norm: &w.ffn_norm,
                    w_gate: Frozen::quant(&w.w_gate),
                    w_up: Frozen::quant(&w.w_up),
                    w_down: Frozen::quant(&w.w_down),
                }
            }
        }
    }

    /// The token embedding `[vocab, dim]`.
    pub fn embedding(&self, tiled: bool) -> Frozen<'a> {
        let cfg = self.config();
        match self {
            Base::F32(p) => Frozen::f32(p.embedding(), cfg.vocab_size, cfg.dim, tiled),
            Base::Quant(q) => Frozen::quant(&q.embedding),
        }
    }

    /// The classifier `[vocab, dim]` (the embedding when tied).
    pub fn classifier(&self, tiled: bool) -> Frozen<'a> {
        let cfg = self.config();
        match self {
            Base::F32(p) => Frozen::f32(p.classifier(), cfg.vocab_size, cfg.dim, tiled),
            Base::Quant(q) => Frozen::quant(q.classifier()),
        }
    }

    pub fn final_norm(&self) -> &'a [f32] {
        match self {
            Base::F32(p) => p.final_norm(),
            Base::Quant(q) => &q.final_norm,
        }
    }
}

/// `m` with every matrix re-stored as BF16 (its dequantized values rounded to bf16): half
/// the memory of f32, for `--base-dtype bf16`.
pub fn to_bf16(m: &QuantModel) -> QuantModel {
    let conv = |q: &QMatrix| -> QMatrix {
        if q.qtype() == QType::BF16 {
            return q.clone();
        }
        let mut row = vec![0f32; q.cols()];
        let mut bytes = Vec::with_capacity(q.rows() * q.cols() * 2);
        for r in 0..q.rows() {
            q.dequantize_row_into(r, &mut row);
            bytes.extend(
                row.iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()),
            );
        }
        // Same shape, and BF16 blocks are one value: the byte count is exact.
        QMatrix::from_bytes("bf16 copy", QType::BF16, q.rows(), q.cols(), bytes)
            .unwrap_or_else(|_| q.clone())
    };
    let mut out = m.clone();
    out.embedding = conv(&m.embedding);
    out.output = m.output.as_ref().map(conv);
    for (o, l) in out.layers.iter_mut().zip(&m.layers) {
        for (dst, src) in [
            (&mut o.wq, &l.wq),
            (&mut o.wk, &l.wk),
            (&mut o.wv, &l.wv),
            (&mut o.wo, &l.wo),
            (&mut o.w_gate, &l.w_gate),
            (&mut o.w_up, &l.w_up),
            (&mut o.w_down, &l.w_down),
        ] {
            *dst = conv(src);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gradcheck::*;

    /// A Q8_0 `[rows, cols]` matrix with deterministic blocks, and its f32 values.
    fn q8_matrix(rows: usize, cols: usize, seed: u64) -> (QMatrix, Vec<f32>) {
        let mut rng = crate::rng::Rng::new(seed);
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / 32 {
            let d = half::f16::from_f32(0.01 + 0.02 * rng.uniform() as f32);
            bytes.extend(d.to_le_bytes());
            for _ in 0..32 {
                bytes.push(((rng.uniform() * 255.0) as i32 - 127) as i8 as u8);
            }
        }
        let q = QMatrix::from_bytes("w", QType::Q8_0, rows, cols, bytes).unwrap();
        let f = q.to_f32();
        (q, f)
    }

    #[test]
    fn tiles_bound_the_scratch_and_cover_every_row() {
        assert_eq!(tile_rows(100, 64), 100);
        let t = tile_rows(50_000, 576);
        assert!(
            t * 576 <= TILE_FLOATS && t.is_multiple_of(16) && t > 1000,
            "{t}"
        );
        assert_eq!(tile_rows(3, TILE_FLOATS * 2), 1);
    }

    #[test]
    fn quantized_products_equal_f32_products_bitwise() {
        let (rows, cols, n) = (48, 64, 5);
        let (q, f) = q8_matrix(rows, cols, 3);
        let x = randn(n * cols, 4, 1.0);
        let dy = randn(n * rows, 5, 1.0);
        let mut s = Vec::new();
        for tile in [rows, 16, 7] {
            let fq = Frozen {
                tile,
                ..Frozen::quant(&q)
            };
            let ff = Frozen {
                tile,
                ..Frozen::f32(&f, rows, cols, true)
            };
            let (mut y1, mut y2) = (vec![1.0; n * rows], vec![1.0; n * rows]);
            fq.xwt(&mut y1, &x, n, 1.0, &mut s);
            ff.xwt(&mut y2, &x, n, 1.0, &mut s);
            assert_eq!(y1, y2, "tile {tile}");
            let (mut d1, mut d2) = (vec![2.0; n * cols], vec![2.0; n * cols]);
            fq.dyw(&mut d1, &dy, n, false, &mut s);
            ff.dyw(&mut d2, &dy, n, false, &mut s);
            assert_eq!(d1, d2, "tile {tile}");
            // Against a plain f64 reference, whatever the tiling.
            for i in 0..n {
                for c in 0..cols {
                    let want: f64 = (0..rows)
                        .map(|r| dy[i * rows + r] as f64 * f[r * cols + c] as f64)
                        .sum();
                    assert!((d1[i * cols + c] as f64 - want).abs() < 1e-4);
                }
                for r in 0..rows {
                    let want: f64 = 1.0
                        + (0..cols)
                            .map(|c| x[i * cols + c] as f64 * f[r * cols + c] as f64)
                            .sum::<f64>();
                    assert!((y1[i * rows + r] as f64 - want).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn tiled_input_gradient_matches_finite_differences() {
        // loss = <g, x W^T> through the dequantized tiles; d loss / dx = g W (dyw).
        let (rows, cols, n) = (40, 32, 3);
        let (q, _) = q8_matrix(rows, cols, 7);
        let fq = Frozen {
            tile: 16,
            ..Frozen::quant(&q)
        };
        let mut x = randn(n * cols, 8, 1.0);
        let g = randn(n * rows, 9, 1.0);
        let mut dx = vec![0.0; n * cols];
        let mut s = Vec::new();
        fq.dyw(&mut dx, &g, n, false, &mut s);
        let num = numeric_grad(&mut x, 1e-2, |x| {
            let mut y = vec![0.0; n * rows];
            fq.xwt(&mut y, x, n, 0.0, &mut Vec::new());
            weighted_sum(&y, &g)
        });
        assert!(rel_l2(&dx, &num) < 1e-3, "{}", rel_l2(&dx, &num));
    }
}
