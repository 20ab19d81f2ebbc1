//! Attention forward and backward alone on a model's shape, best of 10, with the FLOPs the
//! MFU formula credits them (2·T·d per token per layer forward, twice that backward):
//! `cargo run --release -p engine --example attn_timing -- smollm2-135m 4 256 2`.

use engine::kernels::attention::{backward, forward, Shape};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let preset = a.get(1).map_or("smollm2-135m", |s| s.as_str());
    let batch: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let seq: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let threads: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    engine::threads::set_threads(threads).expect("threads");
    let cfg = engine::ModelConfig::preset(preset).expect("preset");
    let s = Shape {
        batch,
        seq,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim(),
    };
    let n = batch * seq;
    let (qw, kw) = (cfg.dim, cfg.kv_dim());
    let fill = |len: usize, k: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + k) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let (q, k, v, dout) = (
        fill(n * qw, 1),
        fill(n * kw, 2),
        fill(n * kw, 3),
        fill(n * qw, 4),
    );
    let mut out = vec![0.0; n * qw];
    let mut lse = vec![0.0; batch * cfg.n_heads * seq];
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qw], vec![0.0; n * kw], vec![0.0; n * kw]);
    let best = |f: &mut dyn FnMut()| {
        (0..10)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let tf = best(&mut || forward(&mut out, &mut lse, &q, &k, &v, s));
    let tb = best(&mut || backward(&mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &out, &lse, s));
    let credited = 2.0 * (n * seq * cfg.dim) as f64;
    println!(
        "{preset} {batch}x{seq}: attention forward {:.2} ms ({:.0} GFLOP/s credited), \
         backward {:.2} ms ({:.0}); x{} layers = {:.0} ms per fwd+bwd",
        tf * 1e3,
        credited / tf / 1e9,
        tb * 1e3,
        2.0 * credited / tb / 1e9,
        cfg.n_layers,
        (tf + tb) * 1e3 * cfg.n_layers as f64
    );
}
