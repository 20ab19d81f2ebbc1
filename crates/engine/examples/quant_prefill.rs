//! Times the quantized prefill product (`quant::qmatmul_bt`, the route `generate` takes) on
//! SmolLM2's layer shapes for each block type: GMAC/s per shape (best of 20), on `threads`
//! threads (argument 1, default 1); `M` activation rows (default 128), `BITS` the activation
//! precision of the 32-block types (16, the default, or 8). K-quants take only the shapes
//! whose depth is a multiple of 256 (SmolLM2's down projection), as in a real file.

use engine::quant::{qmatmul_bt, ActPrecision, QMatrix, QType, QuantizedActs};
use std::time::Instant;

/// A weight matrix of random quant bits with sane f16 scales (no subnormal slow paths).
fn matrix(t: QType, n: usize, k: usize) -> QMatrix {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes: Vec<u8> = (0..n * k / t.block_len() * t.block_bytes())
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            (s >> 56) as u8
        })
        .collect();
    let scales: &[usize] = match t {
        QType::Q6K => &[208],
        QType::Q4K | QType::Q5K | QType::Q4_1 | QType::Q5_1 => &[0, 2],
        _ => &[0],
    };
    let scale = half::f16::from_f32(0.004).to_le_bytes();
    for b in bytes.chunks_exact_mut(t.block_bytes()) {
        for &at in scales {
            b[at..at + 2].copy_from_slice(&scale);
        }
    }
    let w = QMatrix::from_bytes("w", t, n, k, bytes).expect("matrix");
    if engine::quant::packed::interleavable(t) {
        w.interleaved()
    } else {
        w
    }
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    // The global pool, so the products run on the engine's team as in `generate`.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("pool");
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let m = env("M", 128);
    let precision = if env("BITS", 16) == 8 {
        ActPrecision::I8
    } else {
        ActPrecision::I16
    };
    // The block types (F32 / F16 / BF16 have `examples/float_prefill.rs`).
    for t in QType::ALL.into_iter().skip(3) {
        for (n, k) in [(576usize, 576usize), (1536, 576), (576, 1536)] {
            if !k.is_multiple_of(t.block_len()) {
                continue;
            }
            let w = matrix(t, n, k);
            let x: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
            let mut acts = QuantizedActs::default();
            acts.precision = precision;
            acts.prepare(&x, m, k, &[t.act_kind()]);
            let mut c = vec![0f32; m * n];
            // Best of 20 timings of 4 products: this machine's noise only ever slows.
            let mut best = f64::INFINITY;
            for _ in 0..20 {
                let t0 = Instant::now();
                for _ in 0..4 {
                    qmatmul_bt(&x, &acts, &w, &mut c, m);
                }
                best = best.min(t0.elapsed().as_secs_f64() / 4.0);
            }
            let macs = (m * n * k) as f64;
            println!(
                "{:5} {m}x{n}x{k}: {:6.1} GMAC/s",
                t.name(),
                macs / best / 1e9
            );
        }
    }
}
