//! Times the float prefill product (`quant::float::matmul_bt_with`) on SmolLM2's layer shapes
//! for each float type at the CPU's SIMD level: GFLOP/s per shape (best of 30) and over one
//! layer, on `threads` threads (argument 1, default 1); `M` rows (default 128).

use engine::quant::dot::Level;
use engine::quant::float::matmul_bt_with;
use engine::quant::{QMatrix, QType};
use std::time::Instant;

fn matrix(t: QType, n: usize, k: usize) -> QMatrix {
    let vals: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect();
    let bytes: Vec<u8> = match t {
        QType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        QType::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    };
    QMatrix::from_bytes("w", t, n, k, bytes).expect("matrix")
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(run);
}

fn run() {
    let m: usize = std::env::var("M")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let level = Level::detect();
    for t in [QType::F16, QType::F32, QType::BF16] {
        let (mut seconds, mut flops) = (0.0, 0.0);
        for (n, k, count) in [(576, 576, 2), (192, 576, 2), (1536, 576, 2), (576, 1536, 1)] {
            let w = matrix(t, n, k);
            let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
            let mut c = vec![0f32; m * n];
            // The best of 30 timings of 4 products: this machine's noise only ever slows.
            let mut best = f64::INFINITY;
            for _ in 0..30 {
                let t0 = Instant::now();
                for _ in 0..4 {
                    matmul_bt_with(level, &x, &w, &mut c, m);
                }
                best = best.min(t0.elapsed().as_secs_f64() / 4.0);
            }
            let f = 2.0 * (m * n * k) as f64;
            seconds += best * count as f64;
            flops += f * count as f64;
            println!("{} {m}x{n}x{k}: {:.1} GFLOP/s", t.name(), f / best / 1e9);
        }
        println!("{} layer: {:.1} GFLOP/s", t.name(), flops / seconds / 1e9);
    }
}
