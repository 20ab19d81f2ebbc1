//! Quick timing of one training step of a preset (engine-only, for kernel work):
//! `cargo run --release -p engine --example step_timing -- stories15m 8 256 2 [lora]`.

use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::model::{forward_backward, forward_loss, Workspace};
use engine::rng::Rng;
use engine::ModelConfig;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let preset = a.get(1).map_or("stories15m", |s| s.as_str());
    let b: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let t: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let threads: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let lora_mode = a.get(5).is_some_and(|s| s == "lora");
    engine::threads::set_threads(threads).unwrap();
    // PRECISION=bf16: every product of the step in BF16 operands.
    if std::env::var("PRECISION").is_ok_and(|p| p == "bf16") {
        engine::gemm::set_precision(engine::gemm::Precision::Bf16).unwrap();
    }
    if preset == "optim" {
        optimizer_timing(b * 1_000_000);
        return;
    }
    let cfg = ModelConfig::preset(preset).expect("preset");
    let params = engine::init::init_params(&cfg, 1).unwrap();
    let lc = LoraConfig {
        rank: 8,
        alpha: 16.0,
        targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O],
        dropout: 0.0,
    };
    let lora = lora_mode.then(|| LoraParams::init(&cfg, &lc, &mut Rng::new(1)).unwrap());
    let mut ws = Workspace::new(&cfg, b, t, lora.as_ref().map(|l| &l.config)).unwrap();
    let mut rng = Rng::new(3);
    let n = b * t;
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut grads = vec![0.0; lora.as_ref().map_or(params.data.len(), |l| l.data.len())];
    let g = |m: usize, nn: usize, k: usize| {
        let x = vec![0.5f32; m * k];
        let y = vec![0.5f32; k * nn];
        let mut c = vec![0.0f32; m * nn];
        let mut best = f64::MAX;
        for _ in 0..4 {
            let s = Instant::now();
            engine::gemm::sgemm(false, false, m, nn, k, 1.0, &x, k, &y, nn, 0.0, &mut c, nn);
            best = best.min(s.elapsed().as_secs_f64());
        }
        2.0 * (m * nn * k) as f64 / best / 1e9
    };
    let peak = g(1024, 1024, 1024).max(g(n, cfg.hidden_dim, cfg.dim));
    println!("gemm peak {peak:.1} GFLOP/s");
    for _ in 0..3 {
        let s = Instant::now();
        forward_loss(&params, lora.as_ref(), &mut ws, &inputs, &targets).unwrap();
        let tf = s.elapsed().as_secs_f64();
        let s = Instant::now();
        engine::optim::zero_grads(&mut grads);
        forward_backward(
            &params,
            lora.as_ref(),
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            &mut rng,
        )
        .unwrap();
        let tb = s.elapsed().as_secs_f64();
        let p = cfg.matmul_param_count() as f64;
        let attn = 6.0 * (cfg.n_layers * t * cfg.dim) as f64;
        let fl = if lora_mode {
            4.0 * p + attn
        } else {
            6.0 * p + attn
        };
        println!(
            "fwd {:.0} ms, fwd+bwd {:.0} ms, MFU {:.1}%",
            tf * 1e3,
            tb * 1e3,
            100.0 * n as f64 * fl / tb / (peak * 1e9)
        );
    }
}

/// Times the optimizer half of a step (norm of the mean gradient, fused AdamW) on `n`
/// parameters, and a parallel clearing of the gradient for comparison.
#[allow(dead_code)]
fn optimizer_timing(n: usize) {
    let mut p = vec![0.1f32; n];
    let mut g = vec![0.01f32; n];
    let mut opt = engine::optim::AdamW::new(n, 0.9, 0.95, 1e-8, 0.1);
    let decay = [0..n / 2, n..n];
    for _ in 0..3 {
        g.fill(0.01);
        let s = Instant::now();
        let stats = engine::optim::grad_stats(&g, 1000, 1.0);
        let t1 = s.elapsed().as_secs_f64();
        opt.step(&mut p, &mut g, stats.scale, 1e-3, &decay);
        let t2 = s.elapsed().as_secs_f64();
        engine::optim::zero_grads(&mut g);
        let t3 = s.elapsed().as_secs_f64();
        println!(
            "optimizer on {n}: norm {:.0} ms, adamw {:.0} ms (parallel zeroing alone {:.0} ms)",
            t1 * 1e3,
            (t2 - t1) * 1e3,
            (t3 - t2) * 1e3
        );
    }
}
