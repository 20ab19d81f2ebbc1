//! The AMX-INT8 prefill product of the K-quants against the scalar reference and the vector
//! row kernels, at tails of the 16-row activation tiles, of the 16-row weight panels and odd
//! super-block counts.
#![cfg(target_arch = "x86_64")]

use engine::quant::amx_kquant::{applies, qmatmul_bt_amx};
use engine::quant::dot::Level;
use engine::quant::matmul::qmatmul_bt_with;
use engine::quant::{ActKind, QType, QuantizedActs};

mod common;
use common::quant::{random_matrix, Lcg};

/// Rows of random activations with a zero block and wide ranges, as 256-blocks.
fn acts(m: usize, k: usize, seed: u64) -> (Vec<f32>, QuantizedActs) {
    let mut g = Lcg(seed);
    let mut x: Vec<f32> = (0..m * k).map(|i| g.f() * (1 + i % 7) as f32).collect();
    x[..256].fill(0.0);
    let mut a = QuantizedActs::default();
    a.prepare(&x, m, k, &[ActKind::Q8K]);
    (x, a)
}

fn have_amx() -> bool {
    let (_, a) = acts(16, 256, 1);
    let w = random_matrix(QType::Q6K, 8, 256, 1);
    let ok = Level::detect().has_avx2() && applies(&a, &w, 16);
    if !ok {
        eprintln!("note: no AMX-INT8 (or AVX2) here; AMX K-quant tests skipped");
    }
    ok
}

const TYPES: [QType; 3] = [QType::Q4K, QType::Q5K, QType::Q6K];

/// The bound: the integer sums are exact on every path, only the f32 order of the (at most
/// 6) super-block terms and the min chain differs, so 1e-5 of the product's largest value
/// (about 80 f32 ulps of it) covers every element.
fn check(t: QType, m: usize, n: usize, k: usize, got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |s, v| s.max(v.abs()));
    for (i, (p, q)) in got.iter().zip(want).enumerate() {
        assert!(
            (p - q).abs() <= 1e-5 * scale,
            "{} vs {what}: m {m} n {n} k {k} [{}, {}]: {p} vs {q}",
            t.name(),
            i / n,
            i % n
        );
    }
}

#[test]
fn amx_kquant_matches_the_scalar_and_row_kernels() {
    if !have_amx() {
        return;
    }
    for t in TYPES {
        // 1, 2, 3 and 6 super-blocks.
        for k in [256, 512, 768, 1536] {
            // 43 = panels of 16, 16, 11; 8 = one partial panel.
            for n in [43, 32, 8] {
                for m in [16, 17, 31, 33, 48] {
                    let w = random_matrix(t, n, k, (n * k + m) as u64);
                    let (x, a) = acts(m, k, m as u64 + 7);
                    let mut amx = vec![f32::NAN; m * n];
                    let mut sc = vec![0f32; m * n];
                    let mut vec = vec![0f32; m * n];
                    assert!(qmatmul_bt_amx(&a, &w, &mut amx, m));
                    qmatmul_bt_with(Level::Scalar, &x, &a, &w, &mut sc, m);
                    qmatmul_bt_with(Level::detect(), &x, &a, &w, &mut vec, m);
                    check(t, m, n, k, &amx, &sc, "scalar");
                    check(t, m, n, k, &amx, &vec, "row kernels");
                }
            }
        }
    }
}

#[test]
fn amx_kquant_declines_what_it_does_not_take() {
    let (_, a) = acts(15, 256, 3);
    let w = random_matrix(QType::Q4K, 16, 256, 3);
    let mut c = vec![0f32; 15 * 16];
    // Fewer than 16 rows stay on the row kernels; the 32-block types go elsewhere.
    assert!(!qmatmul_bt_amx(&a, &w, &mut c, 15));
    let (_, a16) = acts(16, 256, 3);
    let q8 = random_matrix(QType::Q8_0, 16, 256, 3);
    assert!(!applies(&a16, &q8, 16));
}

/// Timing of the model's K-quant product (ffn_down, m 128), AMX against the row kernels
/// (`--ignored --nocapture`).
#[test]
#[ignore]
fn amx_kquant_speed() {
    if !have_amx() {
        return;
    }
    for t in TYPES {
        let (m, n, k) = (128, 576, 1536);
        let w = random_matrix(t, n, k, 1);
        let (x, a) = acts(m, k, 2);
        let mut c = vec![0f32; m * n];
        let time = |f: &mut dyn FnMut()| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best * 1e3
        };
        let amx = time(&mut || assert!(qmatmul_bt_amx(&a, &w, &mut c, m)));
        let rows = time(&mut || qmatmul_bt_with(Level::detect(), &x, &a, &w, &mut c, m));
        eprintln!(
            "{} m {m} n {n} k {k}: amx {amx:.3} ms, row kernels {rows:.3} ms",
            t.name()
        );
    }
}
