//! The F32 / F16 / BF16 routes (`quant::float`: multi-row matrix-vector kernels for decode,
//! register tiles over widened strips for prefill, AVX2 and AVX-512) against the
//! dequantize-then-f64 reference.
//!
//! Bound: f32 sums of `k` products in 32 lanes err by at most about `(k / 32 + 8) · 2⁻²⁴`
//! times `Σ|wᵢ xᵢ|`; the tests allow `1e-5 · Σ|wᵢ xᵢ| + 1e-6` (k ≤ 2100 here), far below
//! the size of any real kernel bug (a dropped or doubled element moves a sum by ~1e-2).

#![allow(clippy::needless_range_loop)]

use engine::quant::dot::Level;
use engine::quant::float::{bf16_dot_takes, matmul_bt_with, matvec_many, takes_matvec};
use engine::quant::{QMatVec, QMatrix, QType};

mod common;
use common::quant::{random_matrix, random_vec};

const FLOATS: [QType; 3] = [QType::F32, QType::F16, QType::BF16];

/// The SIMD levels this CPU runs (a note when one is missing).
fn levels() -> Vec<Level> {
    let mut v = Vec::new();
    match Level::detect() {
        Level::Avx512Vnni => v.extend([Level::Avx2, Level::Avx512Vnni]),
        Level::Avx2 => {
            eprintln!("note: no AVX-512 on this CPU, AVX2 kernels only");
            v.push(Level::Avx2)
        }
        Level::Scalar => eprintln!("skipped: no AVX2 on this CPU"),
    }
    v
}

/// `(Σ wᵢ xᵢ, Σ |wᵢ xᵢ|)` in f64 over the dequantized row `r` and activation row `xr`.
fn reference(wf: &[f32], k: usize, r: usize, xr: &[f32]) -> (f64, f64) {
    let row = &wf[r * k..(r + 1) * k];
    let exact = row.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
    let mag = row
        .iter()
        .zip(xr)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    (exact, mag)
}

fn check(got: f32, exact: f64, mag: f64, what: &str) {
    let err = (got as f64 - exact).abs();
    assert!(
        err <= 1e-5 * mag + 1e-6,
        "{what}: {got} vs {exact} (err {err:e}, Σ|wx| {mag})"
    );
}

#[test]
fn float_matvec_matches_the_dequantized_reference() {
    // Odd column counts hit every tail length of the 16/32-lane (8/16 on AVX2) loops; row
    // counts not a multiple of 4 take the one-row pass after the four-row passes.
    let shapes = [
        (1, 1),
        (3, 7),
        (5, 15),
        (4, 16),
        (9, 31),
        (7, 32),
        (6, 33),
        (13, 64),
        (10, 100),
        (11, 576),
        (4, 1001),
    ];
    for level in levels() {
        for t in FLOATS {
            for (i, &(n, k)) in shapes.iter().enumerate() {
                let w = random_matrix(t, n, k, 100 + i as u64);
                let w2 = random_matrix(t, 3, k, 200 + i as u64);
                let x = random_vec(k, 300 + i as u64);
                let (mut o, mut o2) = (vec![0f32; n], vec![0f32; 3]);
                let jobs = vec![
                    QMatVec { w: &w, out: &mut o },
                    QMatVec {
                        w: &w2,
                        out: &mut o2,
                    },
                ];
                assert!(takes_matvec(level, &jobs));
                matvec_many(level, &x, jobs);
                let (wf, wf2) = (w.to_f32(), w2.to_f32());
                for r in 0..n {
                    let (exact, mag) = reference(&wf, k, r, &x);
                    check(
                        o[r],
                        exact,
                        mag,
                        &format!("{level:?} {} [{n}, {k}] row {r}", t.name()),
                    );
                }
                for r in 0..3 {
                    let (exact, mag) = reference(&wf2, k, r, &x);
                    check(
                        o2[r],
                        exact,
                        mag,
                        &format!("{level:?} {} second job row {r}", t.name()),
                    );
                }
                // A row alone (the one-row pass) gives the bits it gives in a pass of four.
                for r in 0..n {
                    let one = QMatrix::from_bytes("row", t, 1, k, w.row(r).to_vec()).unwrap();
                    let mut o1 = [0f32];
                    matvec_many(
                        level,
                        &x,
                        vec![QMatVec {
                            w: &one,
                            out: &mut o1,
                        }],
                    );
                    assert_eq!(
                        o1[0].to_bits(),
                        o[r].to_bits(),
                        "{level:?} {} row {r}",
                        t.name()
                    );
                }
            }
        }
    }
}

#[test]
fn float_matvec_declines_block_types_and_scalar() {
    let w = random_matrix(QType::Q8_0, 4, 64, 1);
    let f = random_matrix(QType::F16, 4, 64, 2);
    let (mut a, mut b) = (vec![0f32; 4], vec![0f32; 4]);
    let jobs = vec![
        QMatVec { w: &f, out: &mut a },
        QMatVec { w: &w, out: &mut b },
    ];
    assert!(!takes_matvec(Level::detect(), &jobs));
    let jobs = vec![QMatVec { w: &f, out: &mut a }];
    assert!(!takes_matvec(Level::Scalar, &jobs));
}

/// `c = x · wᵀ` through the strip tiles (or BF16 dot products), checked element by element.
fn check_prefill(level: Level, t: QType, m: usize, n: usize, k: usize, seed: u64) {
    let w = random_matrix(t, n, k, seed);
    let x = random_vec(m * k, seed + 1);
    let mut c = vec![f32::NAN; m * n];
    assert!(matmul_bt_with(level, &x, &w, &mut c, m));
    let wf = w.to_f32();
    for r in 0..m {
        for j in 0..n {
            let (exact, mag) = reference(&wf, k, j, &x[r * k..(r + 1) * k]);
            let what = format!("{level:?} {} m {m} [{n}, {k}] c[{r}, {j}]", t.name());
            if bf16_dot_takes(level, t, k) {
                // Activations rounded to BF16: 2⁻⁸ relative each, plus the f32 sums.
                let err = (c[r * n + j] as f64 - exact).abs();
                assert!(
                    err <= (2f64.powi(-8) + 1e-5) * mag + 1e-6,
                    "{what}: err {err:e}"
                );
            } else {
                check(c[r * n + j], exact, mag, &what);
            }
        }
    }
}

#[test]
fn float_prefill_matches_the_dequantized_reference() {
    for level in levels() {
        for t in FLOATS {
            for (i, &(m, n, k)) in [(8, 5, 7), (13, 37, 100), (37, 70, 576), (9, 33, 2100)]
                .iter()
                .enumerate()
            {
                check_prefill(level, t, m, n, k, 10 * i as u64 + 1);
            }
        }
    }
}

#[test]
fn float_prefill_panels_split_one_piece() {
    // One thread: one piece of all n rows, widened in panels of 16 strips, 256 rows, then 44
    // (two strips and a short third: on AVX-512 one pair and a single strip of 12 columns),
    // over 9 depth blocks of at most 256.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for level in levels() {
            for t in FLOATS {
                check_prefill(level, t, 11, 300, 2100, 7);
            }
        }
    });
}

#[test]
fn float_prefill_tiles_agree_bit_for_bit_across_levels() {
    // The AVX2 (6 × 16) and AVX-512 (12 × 32) tiles sum each output's products in depth
    // order with one FMA each, depth blocks added in turn: the same f32 result, bit for bit.
    if Level::detect() != Level::Avx512Vnni {
        eprintln!("skipped: no AVX-512 on this CPU");
        return;
    }
    for t in [QType::F32, QType::F16] {
        for (i, &(m, n, k)) in [(8, 5, 7), (25, 77, 300), (13, 300, 2100)]
            .iter()
            .enumerate()
        {
            let w = random_matrix(t, n, k, 40 + i as u64);
            let x = random_vec(m * k, 50 + i as u64);
            let mut c2 = vec![f32::NAN; m * n];
            let mut c5 = vec![f32::NAN; m * n];
            assert!(matmul_bt_with(Level::Avx2, &x, &w, &mut c2, m));
            assert!(matmul_bt_with(Level::Avx512Vnni, &x, &w, &mut c5, m));
            for (j, (a, b)) in c2.iter().zip(&c5).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{} [{m}, {n}, {k}] at {j}",
                    t.name()
                );
            }
        }
    }
}

#[test]
fn float_prefill_declines_what_it_does_not_run() {
    let x = random_vec(8 * 64, 3);
    let mut c = vec![0f32; 8 * 4];
    let q = random_matrix(QType::Q8_0, 4, 64, 4);
    assert!(!matmul_bt_with(Level::detect(), &x, &q, &mut c, 8));
    let f = random_matrix(QType::BF16, 4, 64, 5);
    assert!(!matmul_bt_with(Level::Scalar, &x, &f, &mut c, 8));
    // Too few rows for the GEMM: the row kernels take them.
    assert!(!matmul_bt_with(
        Level::detect(),
        &x[..7 * 64],
        &f,
        &mut c[..7 * 4],
        7
    ));
}
