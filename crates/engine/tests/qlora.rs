//! LoRA on a quantized frozen base (QLoRA): the tiled dequantize-into-GEMM path gives the
//! very losses, gradients and adapters of a run on the same base dequantized to f32, for
//! every block type; its gradients match finite differences; full training refuses it.

use engine::frozen::{self, Base};
use engine::init::init_params;
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::model::{self, Workspace, IGNORE_INDEX};
use engine::optim::{AdamW, GradScale};
use engine::quant::{QMatrix, QType, QuantModel};
use engine::rng::Rng;
use engine::{ModelConfig, Params};
use std::collections::HashMap;

fn config(dim: usize, hidden: usize) -> ModelConfig {
    ModelConfig {
        dim,
        hidden_dim: hidden,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 48,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: false,
    }
}

/// Byte offsets of a block's f16 scale fields and the value each gets (small, so the
/// weights have the size of a trained model's).
fn scale_fields(t: QType) -> &'static [(usize, f32)] {
    match t {
        QType::Q8_0 => &[(0, 0.0008)],
        QType::Q4_0 => &[(0, 0.012)],
        QType::Q4_1 => &[(0, 0.012), (2, -0.09)],
        QType::Q4K | QType::Q5K => &[(0, 0.0004), (2, 0.0003)],
        QType::Q6K => &[(208, 0.00002)],
        _ => &[],
    }
}

/// A `[rows, cols]` matrix of `t` with random blocks (valid for every block type).
fn random_matrix(t: QType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut rng = Rng::new(seed);
    let blocks = rows * cols / t.block_len();
    let mut bytes = Vec::with_capacity(blocks * t.block_bytes());
    for _ in 0..blocks {
        let mut b: Vec<u8> = (0..t.block_bytes()).map(|_| rng.below(256) as u8).collect();
        for &(at, v) in scale_fields(t) {
            let jitter = 0.5 + rng.uniform() as f32;
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v * jitter).to_le_bytes());
        }
        bytes.extend(b);
    }
    QMatrix::from_bytes("w", t, rows, cols, bytes).unwrap()
}

/// A quantized model of `t` (norms from a seeded init) and the same model dequantized to f32.
fn models(cfg: &ModelConfig, t: QType) -> (QuantModel, Params) {
    let init = init_params(cfg, 2).unwrap();
    let mut dequantized: HashMap<String, Vec<f32>> = HashMap::new();
    let mut seed = 100;
    let q = QuantModel::from_params(&init, |name, rows, cols, _| {
        seed += 1;
        let m = random_matrix(t, rows, cols, seed);
        dequantized.insert(name.to_string(), m.to_f32());
        Some(m)
    })
    .unwrap();
    let mut f = init.clone();
    for (name, values) in dequantized {
        f.get_mut(&name).unwrap().copy_from_slice(&values);
    }
    (q, f)
}

fn batch(cfg: &ModelConfig, n: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut r = Rng::new(seed);
    let v = cfg.vocab_size as u64;
    let inputs: Vec<u32> = (0..n).map(|_| r.below(v) as u32).collect();
    let mut targets: Vec<u32> = (0..n).map(|_| r.below(v) as u32).collect();
    targets[1] = IGNORE_INDEX;
    (inputs, targets)
}

fn lora_config(dropout: f32) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: LoraTarget::ALL.to_vec(),
        dropout,
    }
}

/// Per-step loss bits and the final adapter bits of `steps` AdamW steps on `base`.
fn run<'a>(
    base: impl Into<Base<'a>> + Copy,
    cfg: &ModelConfig,
    steps: usize,
) -> (Vec<u64>, Vec<u32>, f64) {
    let lc = lora_config(0.1);
    let mut lp = LoraParams::init(cfg, &lc, &mut Rng::new(5)).unwrap();
    let (b, t) = (2, 8);
    let mut ws = Workspace::new(cfg, b, t, Some(&lc)).unwrap();
    let mut grads = vec![0.0; lp.data.len()];
    let mut adam = AdamW::new(lp.data.len(), 0.9, 0.95, 1e-8, 0.0);
    let mut rng = Rng::new(11);
    let mut losses = Vec::new();
    for s in 0..steps {
        let (inputs, targets) = batch(cfg, b * t, s as u64);
        let l = model::forward_backward(
            base,
            Some(&lp),
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            &mut rng,
        )
        .unwrap();
        losses.push(l.mean().to_bits());
        let scale = GradScale {
            mean: 1.0 / l.count as f32,
            clip: 1.0,
        };
        adam.step(&mut lp.data, &mut grads, scale, 1e-2, &[]);
    }
    let (inputs, targets) = batch(cfg, b * t, 99);
    let eval = model::forward_loss(base, Some(&lp), &mut ws, &inputs, &targets).unwrap();
    (
        losses,
        lp.data.iter().map(|x| x.to_bits()).collect(),
        eval.mean(),
    )
}

#[test]
fn quantized_base_trains_bit_identically_to_its_dequantized_f32_copy() {
    let small = config(64, 96);
    let k = config(256, 256);
    for (t, cfg) in [
        (QType::Q8_0, &small),
        (QType::Q4_0, &small),
        (QType::Q4_1, &small),
        (QType::Q4K, &k),
        (QType::Q5K, &k),
        (QType::Q6K, &k),
        (QType::F16, &small),
    ] {
        let (q, f) = models(cfg, t);
        let (lq, aq, eq) = run(&q, cfg, 4);
        let (lf, af, ef) = run(&f, cfg, 4);
        assert_eq!(lq, lf, "{}: per-step losses", t.name());
        assert_eq!(aq, af, "{}: trained adapter", t.name());
        assert_eq!(eq.to_bits(), ef.to_bits(), "{}: evaluation", t.name());
        // The adapter trained: the losses moved.
        assert_ne!(lq[0], lq[3], "{}", t.name());
    }
}

#[test]
fn quantized_base_lora_gradient_matches_finite_differences() {
    let cfg = config(64, 96);
    let (q, _) = models(&cfg, QType::Q4_1);
    let lc = lora_config(0.0);
    let mut lp = LoraParams::init(&cfg, &lc, &mut Rng::new(5)).unwrap();
    let mut r = Rng::new(6);
    lp.data
        .iter_mut()
        .for_each(|x| *x += (r.normal() * 0.3) as f32);
    let (b, t) = (2, 5);
    let (inputs, targets) = batch(&cfg, b * t, 2);
    let mut ws = Workspace::new(&cfg, b, t, Some(&lc)).unwrap();
    let mut grads = vec![0.0; lp.data.len()];
    model::forward_backward(
        &q,
        Some(&lp),
        &mut grads,
        &mut ws,
        &inputs,
        &targets,
        &mut Rng::new(0),
    )
    .unwrap();
    // The first layer's adapters: their gradient crosses every later layer's dY W.
    let coords: Vec<usize> = (0..lp.layout.tensors[13].range().end).step_by(29).collect();
    let (mut num, mut den) = (0.0, 0.0);
    let eps = 1e-3f32;
    for &i in &coords {
        let old = lp.data[i];
        let mut at = |e: f32| {
            lp.data[i] = old + e;
            model::forward_loss(&q, Some(&lp), &mut ws, &inputs, &targets)
                .unwrap()
                .sum
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        lp.data[i] = old;
        num += (grads[i] as f64 - fd).powi(2);
        den += fd * fd;
    }
    let err = (num / den).sqrt();
    assert!(den > 0.0 && err < 5e-3, "relative error {err}");
}

#[test]
fn full_training_on_a_quantized_base_is_refused() {
    let cfg = config(64, 96);
    let (q, f) = models(&cfg, QType::Q8_0);
    let mut ws = Workspace::new(&cfg, 1, 4, None).unwrap();
    let mut grads = vec![0.0; f.data.len()];
    let e = model::forward_backward(
        &q,
        None,
        &mut grads,
        &mut ws,
        &[1, 2, 3, 4],
        &[2, 3, 4, 5],
        &mut Rng::new(0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("quantized"), "{e}");
    // Evaluation without an adapter is fine, and equals the f32 copy's.
    let a = model::forward_loss(&q, None, &mut ws, &[1, 2, 3, 4], &[2, 3, 4, 5]).unwrap();
    let b = model::forward_loss(&f, None, &mut ws, &[1, 2, 3, 4], &[2, 3, 4, 5]).unwrap();
    assert_eq!(a.sum.to_bits(), b.sum.to_bits());
}

#[test]
fn bf16_copy_rounds_every_matrix_value() {
    let cfg = config(64, 96);
    let (q, f) = models(&cfg, QType::Q4_1);
    let b = frozen::to_bf16(&q);
    assert_eq!(b.layers[1].w_down.qtype(), QType::BF16);
    let got = b.layers[1].w_down.to_f32();
    let want = f.get("model.layers.1.mlp.down_proj.weight").unwrap();
    for (g, w) in got.iter().zip(want) {
        assert_eq!(*g, half::bf16::from_f32(*w).to_f32());
    }
    assert!(b.weight_bytes() < 2 * f.data.len() as u64 + 1);
}
