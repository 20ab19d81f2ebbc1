//! Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C.
//!
//! Backed by the `gemm` crate, which picks its AVX-512 / AVX2 / scalar kernels at run time
//! (so one binary runs on any x86-64 or aarch64 CPU). Outside a parallel region the product
//! is divided among the rayon threads (see `sgemm_parts`: pieces, one block per thread, or
//! the crate's own threading); the division depends only on the shape and the thread count,
//! so results are reproducible for a fixed thread count.

use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// The operand precision of the products: f32, or BF16 operands with f32 sums (mixed-precision
/// training, `train --precision bf16`). Set once per process, before the products run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Precision {
    F32,
    Bf16,
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU runs BF16 products (AVX-512 BF16; AMX is not used).
pub fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::quant::x86_bf16gemm::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Makes [`sgemm`] run in `p`; BF16 where the CPU lacks it is an error (nothing changes).
pub fn set_precision(p: Precision) -> Result<(), crate::EngineError> {
    if p == Precision::Bf16 && !bf16_available() {
        return Err(crate::EngineError::Unsupported(
            "bf16 products need a CPU with AVX-512 BF16 (this one has none)".into(),
        ));
    }
    PRECISION.store(p as u8, Ordering::Relaxed);
    Ok(())
}

/// The precision [`sgemm`] runs in.
pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// In BF16 mode, [`sgemm`]'s products below this many multiply-adds stay f32 (rounding them
/// buys nothing).
const MIN_BF16_WORK: usize = 1 << 14;

/// `op(A)` is `[m, k]`: A itself (`trans_a == false`, stored `[m, k]` with row stride `lda`)
/// or A transposed (stored `[k, m]` with row stride `lda`). Likewise `op(B)` is `[k, n]`.
/// `C` is `[m, n]` with row stride `ldc`. With `beta == 0` C is only written, never read.
///
/// Panics if a slice is too short for the shape it is given (a bug in the caller, not input).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let small = m.saturating_mul(n).saturating_mul(k) < MIN_BF16_WORK;
    sgemm_in(
        if small { Precision::F32 } else { precision() },
        trans_a,
        trans_b,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        ldc,
    );
}

/// [`sgemm`] in the given precision (BF16 falls back to f32 where the CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_in(
    precision: Precision,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let threads = rayon::current_num_threads();
    let parts = if threads > 1 && rayon::current_thread_index().is_none() {
        threads
    } else {
        1
    };
    sgemm_parts(
        precision, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parts,
    );
}

/// `sgemm` split into (at most) `parts` pieces.
#[allow(clippy::too_many_arguments)]
fn sgemm_parts(
    precision: Precision,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    parts: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let need = |rows: usize, cols: usize, ld: usize| {
        if rows == 0 {
            0
        } else {
            (rows - 1) * ld + cols
        }
    };
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    assert!(a_cols <= lda || a_rows <= 1, "sgemm: lda too small");
    assert!(b_cols <= ldb || b_rows <= 1, "sgemm: ldb too small");
    assert!(n <= ldc || m <= 1, "sgemm: ldc too small");
    assert!(a.len() >= need(a_rows, a_cols, lda), "sgemm: A too short");
    assert!(b.len() >= need(b_rows, b_cols, ldb), "sgemm: B too short");
    assert!(c.len() >= need(m, n, ldc), "sgemm: C too short");
    if k == 0 {
        for row in c.chunks_mut(ldc.max(1)).take(m) {
            for x in &mut row[..n] {
                *x *= beta;
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if precision == Precision::Bf16 && bf16_available() {
        // SAFETY: available checked; the asserts above bound every element; `c` is borrowed
        // mutably, so it cannot alias `a` or `b`.
        unsafe {
            crate::quant::x86_bf16gemm::sgemm_bf16(
                trans_a,
                trans_b,
                m,
                n,
                k,
                alpha,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                ldc,
                parts > 1,
            );
        }
        return;
    }
    // Element (i, j) of a strided matrix lives at i * rs + j * cs.
    let (a_rs, a_cs) = if trans_a { (1, lda) } else { (lda, 1) };
    let (b_rs, b_cs) = if trans_b { (1, ldb) } else { (ldb, 1) };
    let g = Gemm {
        m,
        n,
        k,
        a: a.as_ptr(),
        a_rs,
        a_cs,
        b: b.as_ptr(),
        b_rs,
        b_cs,
        alpha,
        beta,
    };
    // How the product is divided among threads, measured on the shapes of a step (GFLOP/s on
    // 2 threads, docs/performance.md):
    // - the engine's pieces (`run_split`) for long-k products (the classifier's dx, small
    //   models' weight gradients: 160 -> 357), weight gradients with a huge output and a short
    //   k (the classifier's dW chunks: 133 -> 352) and narrow weight gradients (LoRA's rank-r
    //   ones), where the crate leaves a thread idle;
    // - one block of C per thread (`run_blocks`) for the layer products: each thread then
    //   packs only its own part of the operands, where the crate's split packs them on every
    //   thread. Blocks of columns for `x W^T` and `dy W` (stories110m's `x W_down^T`,
    //   1024x768x2048: 342 -> 393), blocks of rows for square-ish weight gradients (768 x 768
    //   x 1024: 369 -> 380; smollm2's 576 x 576 x 1024: 348 -> 372);
    // - the crate's own split for the rest: narrow outputs (8192x64x64: 365, columns 231).
    let big = parts > 1 && m.saturating_mul(n).saturating_mul(k) >= MIN_SPLIT_WORK;
    let division = if k > 4 * m.max(n) || (trans_a && (m.max(n) >= 8 * k || m.min(n) < 128)) {
        Division::Pieces
    } else if big && trans_a && m >= MIN_ROWS_PER_THREAD * parts {
        Division::Blocks(Block::Rows)
    } else if big && !trans_a && n >= MIN_COLUMNS_PER_THREAD * parts && k >= MIN_K_PART {
        Division::Blocks(Block::Columns)
    } else {
        Division::Crate
    };
    // SAFETY: the asserts above prove every element addressed by the shapes and strides lies
    // inside the slices; `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        match division {
            Division::Pieces => g.run_split(c.as_mut_ptr(), ldc, parts),
            Division::Blocks(block) => g.run_blocks(c.as_mut_ptr(), ldc, parts, block),
            Division::Crate => g.run_tiled(c.as_mut_ptr(), ldc, parts),
        }
    }
}

/// How `sgemm` divides a product among threads.
#[derive(Clone, Copy)]
enum Division {
    /// Several pieces per thread (`Gemm::run_split`).
    Pieces,
    /// One block of C per thread (`Gemm::run_blocks`).
    Blocks(Block),
    /// The `gemm` crate's own threading.
    Crate,
}

/// Which way `Gemm::run_blocks` cuts C.
#[derive(Clone, Copy)]
enum Block {
    Rows,
    Columns,
}

/// Work below this many multiply-adds runs on one thread (splitting costs more than it saves).
const MIN_SPLIT_WORK: usize = 1 << 20;
/// Rows / columns per piece at least.
const MIN_PART: usize = 32;
/// Depth per piece at least, when k is split.
const MIN_K_PART: usize = 256;
/// Pieces per thread.
const PIECES_PER_THREAD: usize = 4;
/// Output columns per thread at least for blocks of columns (narrower blocks were slower).
const MIN_COLUMNS_PER_THREAD: usize = 256;
/// Output rows per thread at least for blocks of rows.
const MIN_ROWS_PER_THREAD: usize = 64;
/// Largest total of k-split partial products (floats): 16 MiB.
const MAX_PARTIAL_FLOATS: usize = 1 << 22;

/// One product with strided operands (raw pointers: the caller checked the bounds).
#[derive(Clone, Copy)]
struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    alpha: f32,
    beta: f32,
}

// SAFETY: the pointers are only read, inside bounds the caller checked, while the caller's
// borrows of A and B are alive (every part finishes before `sgemm` returns).
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: each part writes a disjoint block of C (or its own buffer).
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

impl CPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Gemm {
    /// Rows i0..i0+len of the product.
    unsafe fn rows(&self, i0: usize, len: usize) -> Gemm {
        Gemm {
            m: len,
            a: self.a.add(i0 * self.a_rs),
            ..*self
        }
    }

    /// Columns j0..j0+len of the product.
    unsafe fn cols(&self, j0: usize, len: usize) -> Gemm {
        Gemm {
            n: len,
            b: self.b.add(j0 * self.b_cs),
            ..*self
        }
    }

    /// alpha A[:, k0..k0+len] B[k0..k0+len, :] alone (beta 0).
    unsafe fn depth(&self, k0: usize, len: usize) -> Gemm {
        Gemm {
            k: len,
            a: self.a.add(k0 * self.a_cs),
            b: self.b.add(k0 * self.b_rs),
            beta: 0.0,
            ..*self
        }
    }

    /// C (row stride ldc) = alpha A B + beta C on this thread.
    unsafe fn run_one(&self, c: *mut f32, ldc: usize) {
        self.run_tiled(c, ldc, 1)
    }

    /// The `gemm` crate's own split over output tiles (best for square-ish products).
    unsafe fn run_tiled(&self, c: *mut f32, ldc: usize, parts: usize) {
        let parallelism = if parts > 1 {
            gemm::Parallelism::Rayon(parts)
        } else {
            gemm::Parallelism::None
        };
        gemm::gemm(
            self.m,
            self.n,
            self.k,
            c,
            1,
            ldc as isize,
            self.beta != 0.0,
            self.a,
            self.a_cs as isize,
            self.a_rs as isize,
            self.b,
            self.b_cs as isize,
            self.b_rs as isize,
            self.beta,
            self.alpha,
            false,
            false,
            false,
            parallelism,
        );
    }

    /// Splits the product into `parts` independent pieces run on rayon's pool: blocks of
    /// rows of C when it is tall, of columns when it is wide, and slices of k summed in a
    /// fixed order when C is small and k long (weight gradients). The split depends only on
    /// the shape and `parts`, so results are reproducible for a given thread count.
    ///
    /// The `gemm` crate parallelises over its own output tiles, which leaves one thread idle
    /// for the narrow products of small models (C 8192 x 64: one tile column) and for weight
    /// gradients (64 x 64 x 8192); splitting here keeps every thread busy.
    unsafe fn run_split(&self, c: *mut f32, ldc: usize, parts: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        if parts < 2 || m.saturating_mul(n).saturating_mul(k) < MIN_SPLIT_WORK {
            return self.run_one(c, ldc);
        }
        // Several pieces per thread, so that rayon can balance them when another process
        // takes a core for a while (two fixed halves then wait on the slower one).
        let pieces = PIECES_PER_THREAD * parts;
        let partial_ok = m * n * pieces <= MAX_PARTIAL_FLOATS;
        if k > 4 * m.max(n) && k >= 2 * MIN_K_PART && partial_ok {
            // Long k: slicing k packs every operand element once in total.
            return self.run_split_k(c, ldc, pieces);
        }
        let c = CPtr(c);
        let block = |len: usize| len.div_ceil(pieces).next_multiple_of(16).max(MIN_PART);
        if m >= n && m >= 2 * MIN_PART {
            let rows = block(m);
            (0..m.div_ceil(rows)).into_par_iter().for_each(|p| {
                let i0 = p * rows;
                self.rows(i0, rows.min(m - i0))
                    .run_one(c.get().add(i0 * ldc), ldc);
            });
        } else if n >= 2 * MIN_PART {
            let cols = block(n);
            (0..n.div_ceil(cols)).into_par_iter().for_each(|p| {
                let j0 = p * cols;
                self.cols(j0, cols.min(n - j0))
                    .run_one(c.get().add(j0), ldc);
            });
        } else if k >= 2 * MIN_K_PART && partial_ok {
            self.run_split_k(c.0, ldc, pieces);
        } else {
            self.run_one(c.0, ldc);
        }
    }

    /// One block of rows or columns of C per part, each on one thread. Several blocks per
    /// thread (as `run_split` makes) measured slower here: every block repacks its operands.
    unsafe fn run_blocks(&self, c: *mut f32, ldc: usize, parts: usize, block: Block) {
        let len = match block {
            Block::Rows => self.m,
            Block::Columns => self.n,
        };
        let size = len.div_ceil(parts).next_multiple_of(16);
        let c = CPtr(c);
        (0..len.div_ceil(size)).into_par_iter().for_each(|p| {
            let (start, this) = (p * size, size.min(len - p * size));
            match block {
                Block::Rows => self
                    .rows(start, this)
                    .run_one(c.get().add(start * ldc), ldc),
                Block::Columns => self.cols(start, this).run_one(c.get().add(start), ldc),
            }
        });
    }

    /// C = beta C + sum over parts of alpha A[:, ks] B[ks, :], parts summed in order.
    unsafe fn run_split_k(&self, c: *mut f32, ldc: usize, parts: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let ks = k.div_ceil(parts).max(MIN_K_PART);
        let count = k.div_ceil(ks);
        let mut partial = vec![0.0f32; count * m * n];
        partial
            .par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(p, buf)| {
                let k0 = p * ks;
                self.depth(k0, ks.min(k - k0)).run_one(buf.as_mut_ptr(), n);
            });
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
            if self.beta == 0.0 {
                row.fill(0.0);
            } else if self.beta != 1.0 {
                for x in row.iter_mut() {
                    *x *= self.beta;
                }
            }
            for p in 0..count {
                let src = &partial[p * m * n + i * n..p * m * n + (i + 1) * n];
                for (x, y) in row.iter_mut().zip(src) {
                    *x += y;
                }
            }
        }
    }
}

/// Plain triple loop, for tests.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_reference(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if trans_a {
                    a[p * lda + i]
                } else {
                    a[i * lda + p]
                };
                let bv = if trans_b {
                    b[j * ldb + p]
                } else {
                    b[p * ldb + j]
                };
                s += av as f64 * bv as f64;
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * s as f32 + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matches_reference_for_all_transposes() {
        let mut rng = Rng::new(1);
        let (m, n, k) = (37, 29, 53);
        let rand = |len: usize, rng: &mut Rng| -> Vec<f32> {
            (0..len).map(|_| rng.normal() as f32).collect()
        };
        for ta in [false, true] {
            for tb in [false, true] {
                let lda = if ta { m + 3 } else { k + 2 };
                let ldb = if tb { k + 1 } else { n + 4 };
                let a = rand(if ta { k * lda } else { m * lda }, &mut rng);
                let b = rand(if tb { n * ldb } else { k * ldb }, &mut rng);
                let c0 = rand(m * (n + 5), &mut rng);
                let mut c1 = c0.clone();
                let mut c2 = c0.clone();
                sgemm(ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, 2.0, &mut c1, n + 5);
                sgemm_reference(ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, 2.0, &mut c2, n + 5);
                for (x, y) in c1.iter().zip(&c2) {
                    assert!((x - y).abs() < 1e-4, "{ta} {tb}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn split_products_match_reference() {
        let mut rng = Rng::new(2);
        // Every division (pieces along rows, columns and k, one block per part, the crate's
        // own), with and without transposes, beta 0 over NaN and beta 2.
        let cases = [
            (true, false, 300, 40, 200),
            (true, true, 40, 300, 200),
            (true, false, 20, 30, 5000),
            (false, false, 40, 200, 5000),
            (false, true, 300, 20, 1000),
            // One block of rows per part (square-ish weight gradient) and of columns per
            // part (wide layer products), with blocks that do not divide evenly.
            (true, false, 300, 150, 200),
            (false, true, 100, 900, 300),
            (false, false, 70, 800, 260),
        ];
        for (ta, tb, m, n, k) in cases {
            let (lda, ldb, ldc) = (
                if ta { m + 1 } else { k + 3 },
                if tb { k } else { n + 2 },
                n + 1,
            );
            let a: Vec<f32> = (0..if ta { k * lda } else { m * lda })
                .map(|_| rng.normal() as f32)
                .collect();
            let b: Vec<f32> = (0..if tb { n * ldb } else { k * ldb })
                .map(|_| rng.normal() as f32)
                .collect();
            let c0: Vec<f32> = (0..m * ldc).map(|_| rng.normal() as f32).collect();
            for (beta, parts) in [(0.0, 3), (2.0, 3), (2.0, 2)] {
                let mut c1 = if beta == 0.0 {
                    vec![f32::NAN; m * ldc]
                } else {
                    c0.clone()
                };
                let mut c2 = c0.clone();
                sgemm_parts(
                    Precision::F32,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    0.5,
                    &a,
                    lda,
                    &b,
                    ldb,
                    beta,
                    &mut c1,
                    ldc,
                    parts,
                );
                sgemm_reference(ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, beta, &mut c2, ldc);
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (c1[i * ldc + j], c2[i * ldc + j]);
                        assert!((x - y).abs() < 1e-3, "{m}x{n}x{k}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
