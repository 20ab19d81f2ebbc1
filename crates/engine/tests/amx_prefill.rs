//! The AMX-INT8 prefill product of the interleaved 32-block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1) against the AVX2 one (bit for bit) and the scalar one, at tails of the 16-row tiles
//! and of the 16-row weight panels.
#![cfg(target_arch = "x86_64")]

use engine::quant::amx_prefill::{applies, qmatmul_bt_amx};
use engine::quant::dot::Level;
use engine::quant::matmul::qmatmul_bt_with;
use engine::quant::{ActKind, ActPrecision, QType, QuantizedActs};

mod common;
use common::quant::{random_matrix, Lcg};

/// Rows of random activations with some zero blocks and wide ranges, at 16 bits.
fn acts(m: usize, k: usize, seed: u64) -> (Vec<f32>, QuantizedActs) {
    let mut g = Lcg(seed);
    let mut x: Vec<f32> = (0..m * k).map(|i| g.f() * (1 + i % 7) as f32).collect();
    x[..32].fill(0.0);
    let mut a = QuantizedActs::default();
    a.precision = ActPrecision::I16;
    a.prepare(&x, m, k, &[ActKind::Q8]);
    (x, a)
}

fn have_amx() -> bool {
    let (_, a) = acts(16, 32, 1);
    let w = random_matrix(QType::Q8_0, 8, 32, 1).interleaved();
    let ok = Level::detect().has_avx2() && applies(&a, &w, 16);
    if !ok {
        eprintln!("note: no AMX-INT8 (or AVX2) here; AMX prefill tests skipped");
    }
    ok
}

const TYPES: [QType; 5] = [
    QType::Q8_0,
    QType::Q4_0,
    QType::Q4_1,
    QType::Q5_0,
    QType::Q5_1,
];

#[test]
fn amx_prefill_is_bit_identical_to_avx2() {
    if !have_amx() {
        return;
    }
    for t in TYPES {
        // Odd and even block counts: the last block's tiles alternate by parity.
        for k in [32, 64, 96, 576, 1536] {
            // 43 = 5 groups (panels of 16, 16, 8) + 3 plain rows; 64 = whole panels.
            for n in [43, 64, 8] {
                for m in [16, 17, 31, 48, 128] {
                    let w = random_matrix(t, n, k, (n * k + m) as u64).interleaved();
                    let (x, a) = acts(m, k, m as u64 + 7);
                    let mut amx = vec![f32::NAN; m * n];
                    let mut avx = vec![0f32; m * n];
                    assert!(qmatmul_bt_amx(&x, &a, &w, &mut amx, m));
                    qmatmul_bt_with(Level::Avx2, &x, &a, &w, &mut avx, m);
                    for (i, (p, q)) in amx.iter().zip(&avx).enumerate() {
                        assert_eq!(
                            p.to_bits(),
                            q.to_bits(),
                            "{} m {m} n {n} k {k} [{}, {}]: {p} vs {q}",
                            t.name(),
                            i / n,
                            i % n
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn amx_prefill_matches_the_scalar_products() {
    if !have_amx() {
        return;
    }
    for t in TYPES {
        let (m, n, k) = (19, 43, 576);
        let w = random_matrix(t, n, k, 5).interleaved();
        let (x, a) = acts(m, k, 9);
        let mut amx = vec![0f32; m * n];
        let mut sc = vec![0f32; m * n];
        assert!(qmatmul_bt_amx(&x, &a, &w, &mut amx, m));
        qmatmul_bt_with(Level::Scalar, &x, &a, &w, &mut sc, m);
        let scale = sc.iter().fold(0f32, |s, v| s.max(v.abs()));
        for (i, (p, q)) in amx.iter().zip(&sc).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 * scale,
                "{} [{}, {}]: {p} vs {q}",
                t.name(),
                i / n,
                i % n
            );
        }
    }
}

#[test]
fn amx_prefill_declines_what_it_does_not_take() {
    let (x, a) = acts(15, 64, 3);
    let w = random_matrix(QType::Q4_1, 16, 64, 3).interleaved();
    let mut c = vec![0f32; 15 * 16];
    // Fewer than 16 rows stay on the other paths.
    assert!(!qmatmul_bt_amx(&x, &a, &w, &mut c, 15));
    let mut a8 = QuantizedActs::default();
    a8.prepare(&x, 15, 64, &[ActKind::Q8]);
    assert!(!applies(&a8, &w, 15));
}

/// Timing of one prefill-sized product, AMX against AVX2 (`--ignored --nocapture`).
#[test]
#[ignore]
fn amx_prefill_speed() {
    if !have_amx() {
        return;
    }
    for (n, k) in [(576, 576), (192, 576), (1536, 576), (576, 1536)] {
        let m = 128;
        let w = random_matrix(QType::Q4_1, n, k, 1).interleaved();
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
        let amx = time(&mut || assert!(qmatmul_bt_amx(&x, &a, &w, &mut c, m)));
        let avx = time(&mut || qmatmul_bt_with(Level::Avx2, &x, &a, &w, &mut c, m));
        eprintln!("m {m} n {n} k {k}: amx {amx:.3} ms, avx2 {avx:.3} ms");
    }
}
