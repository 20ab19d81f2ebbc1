//! Mixed-precision training (`set_precision(Precision::Bf16)`): the gradients of a whole
//! model, full and LoRA, against the f32 ones tensor by tensor, and repeatability.
//!
//! Its own test binary because the precision is process-wide.

use engine::gemm::{bf16_available, precision, set_precision, Precision};
use engine::init::init_params;
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::model::{self, Workspace};
use engine::rng::Rng;
use engine::{ModelConfig, ParamLayout};
use std::sync::Mutex;

/// The tests switch the process-wide precision, so they take turns.
static PRECISION_LOCK: Mutex<()> = Mutex::new(());

/// Per-tensor bound on ||g_bf16 - g_f32|| / ||g_f32||. Each operand of each product is
/// rounded to 8 significant bits (relative error ≤ 2⁻⁹ ≈ 0.002); through a forward and a
/// backward of two layers those errors add up, mostly without cancelling, to a few 2⁻⁹.
const GRAD_BOUND: f64 = 1e-2;

fn config() -> ModelConfig {
    // Every product is above the size below which BF16 mode keeps f32.
    ModelConfig {
        dim: 64,
        hidden_dim: 160,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 300,
        max_seq_len: 32,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_embeddings: false,
        qkv_bias: false,
    }
}

fn batch(cfg: &ModelConfig, n: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut r = Rng::new(seed);
    let mut draw = || {
        (0..n)
            .map(|_| r.below(cfg.vocab_size as u64) as u32)
            .collect::<Vec<u32>>()
    };
    (draw(), draw())
}

/// Skips (with a note) where the CPU has no AVX-512 BF16, after checking that asking for
/// BF16 there is refused and changes nothing.
fn bf16_or_skip() -> bool {
    if bf16_available() {
        return true;
    }
    assert!(set_precision(Precision::Bf16).is_err());
    assert_eq!(precision(), Precision::F32);
    eprintln!("skipped: this CPU has no AVX-512 BF16");
    false
}

/// The batch shape of the tests.
const B: usize = 4;
const T: usize = 32;

/// A model and one batch of random tokens (seeded).
struct Case {
    params: engine::Params,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

fn case(seed: u64) -> Case {
    let cfg = config();
    let (inputs, targets) = batch(&cfg, B * T, seed);
    Case {
        params: init_params(&cfg, seed).unwrap(),
        inputs,
        targets,
    }
}

/// Loss sum and gradient of the case's batch in precision `p`.
fn grads_in(p: Precision, c: &Case, lora: Option<&LoraParams>) -> (f64, Vec<f32>) {
    set_precision(p).unwrap();
    let mut ws = Workspace::new(&c.params.config, B, T, lora.map(|l| &l.config)).unwrap();
    let n = lora.map_or(c.params.data.len(), |l| l.data.len());
    let mut grads = vec![0.0; n];
    let loss = model::forward_backward(
        &c.params,
        lora,
        &mut grads,
        &mut ws,
        &c.inputs,
        &c.targets,
        &mut Rng::new(0),
    )
    .unwrap();
    set_precision(Precision::F32).unwrap();
    (loss.sum, grads)
}

/// The relative L2 difference of every tensor; asserts each is within the bound and that
/// BF16 really ran (some tensor differs at all).
fn compare(layout: &ParamLayout, f32_grads: &[f32], bf16_grads: &[f32]) {
    let mut worst = (0.0f64, String::new());
    for t in &layout.tensors {
        let (a, b) = (&f32_grads[t.range()], &bf16_grads[t.range()]);
        let den: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(den > 0.0, "{}: zero f32 gradient", t.name);
        let rel = num / den;
        assert!(
            rel < GRAD_BOUND,
            "{}: bf16 gradient differs from f32 by {rel:.2e} (bound {GRAD_BOUND})",
            t.name
        );
        if rel > worst.0 {
            worst = (rel, t.name.clone());
        }
    }
    eprintln!("largest relative difference: {:.2e} ({})", worst.0, worst.1);
    assert!(
        worst.0 > 0.0,
        "bf16 gave exactly the f32 gradients: it did not run"
    );
}

#[test]
fn full_training_gradients_are_within_the_bound_of_f32() {
    let _turn = PRECISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !bf16_or_skip() {
        return;
    }
    let c = case(7);
    let (l32, g32) = grads_in(Precision::F32, &c, None);
    let (l16, g16) = grads_in(Precision::Bf16, &c, None);
    let per_token = (l32 - l16).abs() / (B * T) as f64;
    assert!(per_token < 1e-2, "loss per token differs by {per_token}");
    compare(&c.params.layout, &g32, &g16);
}

#[test]
fn lora_gradients_are_within_the_bound_of_f32() {
    let _turn = PRECISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !bf16_or_skip() {
        return;
    }
    let c = case(8);
    let lc = LoraConfig {
        rank: 8,
        alpha: 16.0,
        targets: LoraTarget::ALL.to_vec(),
        dropout: 0.0,
    };
    let mut lora = LoraParams::init(&c.params.config, &lc, &mut Rng::new(5)).unwrap();
    // Nonzero B so that the A gradients carry signal.
    let mut r = Rng::new(6);
    lora.data
        .iter_mut()
        .for_each(|x| *x += (r.normal() * 0.02) as f32);
    let (_, g32) = grads_in(Precision::F32, &c, Some(&lora));
    let (_, g16) = grads_in(Precision::Bf16, &c, Some(&lora));
    compare(&lora.layout, &g32, &g16);
}

#[test]
fn two_bf16_steps_are_bitwise_identical() {
    let _turn = PRECISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !bf16_or_skip() {
        return;
    }
    let c = case(9);
    let run = || {
        let (l, g) = grads_in(Precision::Bf16, &c, None);
        (
            l.to_bits(),
            g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        )
    };
    let first = run();
    assert!(first == run(), "two bf16 runs differ");
}
