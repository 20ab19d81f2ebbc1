//! Whole-model checks that need no fixtures: finite differences through every kernel
//! (full training with q/k/v bias, and LoRA on every target with dropout), and determinism.

use engine::init::init_params;
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::model::{self, Workspace, IGNORE_INDEX};
use engine::rng::Rng;
use engine::ModelConfig;

fn small_config() -> ModelConfig {
    ModelConfig {
        dim: 16,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 19,
        max_seq_len: 8,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: true,
    }
}

fn batch(cfg: &ModelConfig, n: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut r = Rng::new(seed);
    let inputs: Vec<u32> = (0..n)
        .map(|_| r.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut targets: Vec<u32> = (0..n)
        .map(|_| r.below(cfg.vocab_size as u64) as u32)
        .collect();
    targets[3] = IGNORE_INDEX;
    (inputs, targets)
}

/// Relative L2 error of the analytic gradient against central differences of the loss sum,
/// over a sample of coordinates.
fn check(
    analytic: &[f32],
    coords: &[usize],
    mut loss_at: impl FnMut(usize, f32) -> f64,
    eps: f32,
) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for &i in coords {
        let fd = (loss_at(i, eps) - loss_at(i, -eps)) / (2.0 * eps as f64);
        num += (analytic[i] as f64 - fd).powi(2);
        den += fd * fd;
    }
    num.sqrt() / den.sqrt()
}

#[test]
fn full_model_gradient_matches_finite_differences() {
    let cfg = small_config();
    let mut params = init_params(&cfg, 3).unwrap();
    // Larger weights than the default init so that every path carries signal.
    let mut r = Rng::new(9);
    params
        .data
        .iter_mut()
        .for_each(|x| *x += (r.normal() * 0.3) as f32);
    let (b, t) = (2, 6);
    let (inputs, targets) = batch(&cfg, b * t, 1);
    let mut ws = Workspace::new(&cfg, b, t, None).unwrap();
    let mut grads = vec![0.0; params.data.len()];
    model::forward_backward(
        &params,
        None,
        &mut grads,
        &mut ws,
        &inputs,
        &targets,
        &mut Rng::new(0),
    )
    .unwrap();
    let coords: Vec<usize> = (0..params.data.len()).step_by(7).collect();
    let mut p = params.clone();
    let err = check(
        &grads,
        &coords,
        |i, e| {
            let old = p.data[i];
            p.data[i] = old + e;
            let l = model::forward_loss(&p, None, &mut ws, &inputs, &targets).unwrap();
            p.data[i] = old;
            l.sum
        },
        1e-2,
    );
    assert!(err < 2e-3, "relative error {err}");
}

#[test]
fn lora_gradient_with_dropout_matches_finite_differences() {
    let cfg = small_config();
    let params = init_params(&cfg, 4).unwrap();
    let lc = LoraConfig {
        rank: 3,
        alpha: 6.0,
        targets: LoraTarget::ALL.to_vec(),
        dropout: 0.25,
    };
    let mut lp = LoraParams::init(&cfg, &lc, &mut Rng::new(5)).unwrap();
    let mut r = Rng::new(6);
    lp.data
        .iter_mut()
        .for_each(|x| *x += (r.normal() * 0.5) as f32);
    let (b, t) = (2, 5);
    let (inputs, targets) = batch(&cfg, b * t, 2);
    let mut ws = Workspace::new(&cfg, b, t, Some(&lc)).unwrap();
    let mut grads = vec![0.0; lp.data.len()];
    model::forward_backward(
        &params,
        Some(&lp),
        &mut grads,
        &mut ws,
        &inputs,
        &targets,
        &mut Rng::new(11),
    )
    .unwrap();
    // Same dropout masks in every evaluation: the same RNG seed, and a throwaway gradient.
    let coords: Vec<usize> = (0..lp.data.len()).step_by(3).collect();
    let mut scratch = vec![0.0; lp.data.len()];
    let err = check(
        &grads,
        &coords,
        |i, e| {
            let old = lp.data[i];
            lp.data[i] = old + e;
            let l = model::forward_backward(
                &params,
                Some(&lp),
                &mut scratch,
                &mut ws,
                &inputs,
                &targets,
                &mut Rng::new(11),
            )
            .unwrap();
            lp.data[i] = old;
            l.sum
        },
        1e-3,
    ); // small eps: q.k couplings make the loss strongly curved in the adapters
    assert!(err < 2e-3, "relative error {err}");
    // Merging the adapter gives the same loss as running it (no dropout at evaluation).
    let mut merged = params.clone();
    lp.merge_into(&mut merged).unwrap();
    let with = model::forward_loss(&params, Some(&lp), &mut ws, &inputs, &targets).unwrap();
    let mut ws0 = Workspace::new(&cfg, b, t, None).unwrap();
    let base = model::forward_loss(&merged, None, &mut ws0, &inputs, &targets).unwrap();
    assert!(
        (with.sum - base.sum).abs() < 1e-4 * with.sum.abs(),
        "{} vs {}",
        with.sum,
        base.sum
    );
}

#[test]
fn two_runs_are_bitwise_identical() {
    // Large enough that the GEMMs and row kernels run multithreaded.
    let cfg = ModelConfig {
        vocab_size: 3000,
        dim: 256,
        hidden_dim: 640,
        n_heads: 4,
        n_kv_heads: 2,
        max_seq_len: 128,
        ..small_config()
    };
    let params = init_params(&cfg, 1).unwrap();
    let (b, t) = (4, 128);
    let (inputs, targets) = batch(&cfg, b * t, 3);
    let run = || {
        let mut ws = Workspace::new(&cfg, b, t, None).unwrap();
        let mut grads = vec![0.0; params.data.len()];
        let l = model::forward_backward(
            &params,
            None,
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            &mut Rng::new(0),
        )
        .unwrap();
        (
            l.sum.to_bits(),
            grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>(),
        )
    };
    let first = run();
    assert!(first == run() && first == run());
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = small_config();
    let params = init_params(&cfg, 1).unwrap();
    let mut ws = Workspace::new(&cfg, 1, 4, None).unwrap();
    assert!(model::forward_loss(&params, None, &mut ws, &[1, 2, 3], &[1, 2, 3]).is_err());
    assert!(model::forward_loss(&params, None, &mut ws, &[1, 2, 3, 19], &[1, 2, 3, 4]).is_err());
    assert!(model::forward_loss(&params, None, &mut ws, &[1, 2, 3, 4], &[1, 2, 3, 40]).is_err());
    let mut grads = vec![0.0; 5];
    assert!(model::forward_backward(
        &params,
        None,
        &mut grads,
        &mut ws,
        &[1, 2, 3, 4],
        &[1, 2, 3, 4],
        &mut Rng::new(0)
    )
    .is_err());
    assert!(Workspace::new(&cfg, 0, 4, None).is_err());
}
