//! Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C.
//!
//! Backed by the `gemm` crate, which picks its AVX-512 / AVX2 / scalar kernels at run time
//! (so one binary runs on any x86-64 or aarch64 CPU). Multithreaded over output tiles with
//! rayon when called outside a parallel region; the reduction order of each output element
//! does not depend on timing, so results are reproducible for a fixed thread count.

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
    // Element (i, j) of a strided matrix lives at i * rs + j * cs.
    let (a_rs, a_cs) = if trans_a { (1, lda) } else { (lda, 1) };
    let (b_rs, b_cs) = if trans_b { (1, ldb) } else { (ldb, 1) };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && rayon::current_thread_index().is_none() {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above prove every element addressed by the shapes and strides lies
    // inside the slices; `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
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
}
