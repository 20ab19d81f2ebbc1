//! The BF16 training GEMM (`gemm::sgemm_in(Precision::Bf16, ..)`, AVX-512 BF16) against a
//! reference: both operands rounded to BF16 as the hardware does (nearest even, f32
//! subnormals to zero), products summed in f64. Bound per output: `(k + 2) · 2⁻²⁴ · Σ|a·b|`
//! for the f32 sums (products of two BF16 values are exact in f32), scaled by |alpha|, plus
//! the rounding of `alpha · sum + beta · c`. Every orientation, edge shapes (tails of rows,
//! strips, depth blocks and of the 32-value padding), padded strides, alpha/beta; and the
//! result bitwise the same on 1 and 2 threads.

use engine::gemm::{bf16_available, sgemm_in, Precision};

fn bf16(x: f32) -> f64 {
    if x.abs() < f32::MIN_POSITIVE {
        return 0.0;
    }
    half::bf16::from_f32(x).to_f64()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

#[allow(clippy::too_many_arguments)]
fn check(rng: &mut Rng, ta: bool, tb: bool, m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let (lda, ldb, ldc) = (
        if ta { m + 3 } else { k + 1 },
        if tb { k + 2 } else { n + 5 },
        n + 4,
    );
    let a: Vec<f32> = (0..if ta { k * lda } else { m * lda })
        .map(|_| rng.next())
        .collect();
    let b: Vec<f32> = (0..if tb { n * ldb } else { k * ldb })
        .map(|_| rng.next())
        .collect();
    let c0: Vec<f32> = (0..m * ldc).map(|_| rng.next()).collect();
    let at = |i: usize, t: usize| if ta { a[t * lda + i] } else { a[i * lda + t] };
    let bt = |t: usize, j: usize| if tb { b[j * ldb + t] } else { b[t * ldb + j] };
    let start = if beta == 0.0 {
        vec![f32::NAN; m * ldc]
    } else {
        c0.clone()
    };
    let mut c = start.clone();
    sgemm_in(
        Precision::Bf16,
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        &a,
        lda,
        &b,
        ldb,
        beta,
        &mut c,
        ldc,
    );
    // The same product inside a parallel region runs on one thread: bitwise equal.
    let mut c1 = start.clone();
    rayon::scope(|s| {
        s.spawn(|_| {
            sgemm_in(
                Precision::Bf16,
                ta,
                tb,
                m,
                n,
                k,
                alpha,
                &a,
                lda,
                &b,
                ldb,
                beta,
                &mut c1,
                ldc,
            )
        })
    });
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut abs) = (0f64, 0f64);
            for t in 0..k {
                let p = bf16(at(i, t)) * bf16(bt(t, j));
                exact += p;
                abs += p.abs();
            }
            let c_in = if beta == 0.0 {
                0.0
            } else {
                c0[i * ldc + j] as f64
            };
            let want = alpha as f64 * exact + beta as f64 * c_in;
            let bound = alpha.abs() as f64 * abs * (k as f64 + 2.0) * 2f64.powi(-24)
                + (alpha.abs() as f64 * abs + (beta as f64 * c_in).abs()) * 2f64.powi(-22)
                + 1e-30;
            let got = c[i * ldc + j] as f64;
            assert!(
                (got - want).abs() <= bound,
                "ta={ta} tb={tb} {m}x{n}x{k} alpha={alpha} beta={beta}: c[{i},{j}] = {got}, want {want} ± {bound}"
            );
            assert_eq!(
                c[i * ldc + j].to_bits(),
                c1[i * ldc + j].to_bits(),
                "{m}x{n}x{k}: threads changed c[{i},{j}]"
            );
        }
        // Columns past n untouched.
        for j in n..ldc {
            assert_eq!(c[i * ldc + j].to_bits(), start[i * ldc + j].to_bits());
        }
    }
}

#[test]
fn bf16_products_match_the_rounded_reference_in_every_orientation() {
    if !bf16_available() {
        eprintln!("skipped: no AVX-512 BF16 on this CPU");
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 7, 3),
            (13, 17, 31),
            (12, 16, 32),
            (25, 33, 33),
            (97, 260, 64),
            (130, 40, 300),
            (7, 300, 520),
            (200, 9, 257),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    check(&mut rng, ta, tb, m, n, k, 1.0, 0.0);
                }
            }
            check(&mut rng, false, true, m, n, k, 0.5, 1.0);
            check(&mut rng, true, false, m, n, k, -2.0, 0.25);
        }
    });
}

#[test]
fn bf16_products_keep_nan_and_flush_subnormals() {
    if !bf16_available() {
        eprintln!("skipped: no AVX-512 BF16 on this CPU");
        return;
    }
    let (m, n, k) = (40, 40, 40);
    let mut a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    a[3 * k + 5] = f32::NAN; // row 3
    a[7 * k] = 1e-40; // row 7: a subnormal, read as zero
    let mut c = vec![0.0f32; m * n];
    sgemm_in(
        Precision::Bf16,
        false,
        false,
        m,
        n,
        k,
        1.0,
        &a,
        k,
        &b,
        n,
        0.0,
        &mut c,
        n,
    );
    assert!(c[3 * n..4 * n].iter().all(|v| v.is_nan()));
    assert!(c[7 * n..8 * n].iter().all(|&v| v == (k - 1) as f32));
    assert!(c[..3 * n].iter().all(|&v| v == k as f32));
}
