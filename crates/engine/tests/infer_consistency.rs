//! The KV-cache paths (batched prefill, prefill in pieces, token-by-token decode) give the
//! logits of the full-sequence training forward pass (`engine::model::logits`).

use engine::infer::{InferError, InferenceSession};
use engine::{ModelConfig, Params};

fn random_params(cfg: &ModelConfig, seed: u64) -> Params {
    let mut p = Params::zeros(cfg).expect("valid config");
    let mut s = seed;
    for x in p.data.iter_mut() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *x = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4;
    }
    // Norm weights near 1, as in trained models.
    let norms: Vec<String> = p
        .layout
        .tensors
        .iter()
        .filter(|t| t.name.contains("norm"))
        .map(|t| t.name.clone())
        .collect();
    for name in norms {
        for w in p.get_mut(&name).expect("norm exists") {
            *w += 1.0;
        }
    }
    p
}

fn configs() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig::preset("tiny").expect("preset");
    vec![
        ("tiny tied gqa", base.clone()),
        (
            "untied mha theta 1e5",
            ModelConfig {
                n_kv_heads: 4,
                tied_embeddings: false,
                rope_theta: 1e5,
                ..base.clone()
            },
        ),
        (
            "qkv bias gqa 4:1",
            ModelConfig {
                n_kv_heads: 1,
                qkv_bias: true,
                dim: 48,
                hidden_dim: 100,
                vocab_size: 77,
                ..base
            },
        ),
    ]
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    (0..n)
        .map(|i| ((i as u64 * 2654435761 + seed * 97) % vocab as u64) as u32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn prefill_and_decode_match_full_forward() {
    for (name, cfg) in configs() {
        let p = random_params(&cfg, 7);
        let t = 80; // past PARALLEL_ATTENTION_FROM: both attention paths
        let v = cfg.vocab_size;
        let toks = tokens(t, v, 3);
        let reference = engine::model::logits(&p, None, &toks, 1, t).expect("reference forward");

        let mut s = InferenceSession::new(&p, t).expect("session");
        let all = s.prefill_all_logits(&toks).expect("prefill");
        let err = max_abs_diff(&all, &reference);
        assert!(err < 1e-4, "{name}: batched prefill differs by {err}");

        // Prompt of 5, then one token at a time.
        let mut s = InferenceSession::new(&p, t).expect("session");
        let last = s.prefill(&toks[..5]).expect("prefill").to_vec();
        let err = max_abs_diff(&last, &reference[4 * v..5 * v]);
        assert!(
            err < 1e-4,
            "{name}: prefill last-row logits differ by {err}"
        );
        for i in 5..t {
            let l = s.decode(toks[i]).expect("decode");
            let err = max_abs_diff(l, &reference[i * v..(i + 1) * v]);
            assert!(err < 1e-4, "{name}: decode at {i} differs by {err}");
        }
        assert_eq!(s.position(), t);

        // Prefill in two batches continues from the cache.
        let mut s = InferenceSession::new(&p, t).expect("session");
        s.prefill(&toks[..17]).expect("first part");
        let rest = s.prefill_all_logits(&toks[17..]).expect("second part");
        let err = max_abs_diff(&rest, &reference[17 * v..]);
        assert!(err < 1e-4, "{name}: split prefill differs by {err}");
    }
}

#[test]
fn reset_and_truncate_reuse_the_cache() {
    let (_, cfg) = configs().remove(0);
    let p = random_params(&cfg, 11);
    let toks = tokens(12, cfg.vocab_size, 5);
    let mut s = InferenceSession::new(&p, 16).expect("session");
    let first = s.prefill(&toks).expect("prefill").to_vec();
    s.reset();
    assert_eq!(s.prefill(&toks).expect("again"), &first[..]);
    s.truncate(6);
    assert_eq!(s.position(), 6);
    // A different batch split may sum in another order: equal up to rounding.
    let err = max_abs_diff(s.prefill(&toks[6..]).expect("rewound"), &first);
    assert!(err < 1e-5, "rewound prefill differs by {err}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (_, cfg) = configs().remove(0);
    let p = random_params(&cfg, 1);
    let mut s = InferenceSession::new(&p, 4).expect("session");
    assert_eq!(
        s.decode(cfg.vocab_size as u32),
        Err(InferError::TokenOutOfRange {
            token: cfg.vocab_size as u32,
            vocab: cfg.vocab_size
        })
    );
    assert_eq!(s.prefill(&[]), Err(InferError::Empty));
    assert_eq!(
        s.prefill(&[1, 2, 3, 4, 5]),
        Err(InferError::ContextFull { capacity: 4 })
    );
    s.prefill(&[1, 2, 3, 4]).expect("fits exactly");
    assert_eq!(s.decode(1), Err(InferError::ContextFull { capacity: 4 }));
    assert!(matches!(
        InferenceSession::new(&p, cfg.max_seq_len + 1),
        Err(InferError::BadCapacity { .. })
    ));
    assert!(matches!(
        InferenceSession::new(&p, 0),
        Err(InferError::BadCapacity { .. })
    ));
}

#[test]
fn half_precision_kv_caches_stay_close_to_f32() {
    use engine::infer::KvType;
    // Keys/values rounded once to 11 (f16) or 8 (bf16) significant bits: logits move by a
    // small multiple of that relative step. The error must not be zero either (the cache
    // really holds the narrow type).
    for (kind, bound) in [(KvType::F16, 5e-3f32), (KvType::BF16, 4e-2)] {
        for (name, cfg) in configs() {
            let p = random_params(&cfg, 11);
            let t = 80;
            let v = cfg.vocab_size;
            let toks = tokens(t, v, 5);
            let reference = engine::model::logits(&p, None, &toks, 1, t).expect("reference");
            let mut s = InferenceSession::with_kv(&p, t, kind).expect("session");
            assert_eq!(s.cache().kind(), kind);
            assert_eq!(s.cache().bytes(), 2 * cfg.n_layers * t * cfg.kv_dim() * 2);
            let mut worst = max_abs_diff(
                s.prefill(&toks[..9]).expect("prefill"),
                &reference[8 * v..9 * v],
            );
            for i in 9..t {
                let l = s.decode(toks[i]).expect("decode");
                worst = worst.max(max_abs_diff(l, &reference[i * v..(i + 1) * v]));
            }
            assert!(worst < bound, "{kind:?} {name}: logits differ by {worst}");
            assert!(worst > 1e-7, "{kind:?} {name}: no rounding seen ({worst})");
        }
    }
}

#[test]
fn an_unmerged_adapter_gives_the_merged_model_logits() {
    use engine::lora::{LoraConfig, LoraParams, LoraTarget};
    use engine::quant::QuantModel;
    // The base stays in its blocks (F32 here: exact), the adapter adds scale · B (A x) to
    // each adapted projection; the reference is the f32 model with B A merged into W. Only
    // the association of the sums differs: logits agree to ~1e-5, far below the ~1e-1 a
    // wrong, dropped or doubled delta moves them (checked below).
    for (name, cfg) in configs() {
        let p = random_params(&cfg, 21);
        for targets in [
            LoraTarget::ALL.to_vec(),
            vec![LoraTarget::V, LoraTarget::Down],
        ] {
            let lc = LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: targets.clone(),
                dropout: 0.0,
            }
            .normalized();
            let mut lora = LoraParams::init(&cfg, &lc, &mut engine::rng::Rng::new(5)).unwrap();
            // Non-zero B (a trained adapter), large enough to move the logits clearly.
            for (i, x) in lora.data.iter_mut().enumerate() {
                if *x == 0.0 {
                    *x = ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2;
                }
            }
            let mut merged = p.clone();
            lora.merge_into(&mut merged).unwrap();
            let t = 70;
            let v = cfg.vocab_size;
            let toks = tokens(t, v, 9);
            let reference = engine::model::logits(&merged, None, &toks, 1, t).unwrap();
            let base = engine::model::logits(&p, None, &toks, 1, t).unwrap();
            assert!(
                max_abs_diff(&base, &reference) > 0.1,
                "{name}: the adapter must move the logits"
            );
            let mut q = QuantModel::from_params(&p, |_, _, _, _| None).unwrap();
            q.attach_adapter(lora.clone()).unwrap();
            let mut s = InferenceSession::new(&q, t).unwrap();
            let all = s.prefill_all_logits(&toks).unwrap();
            let err = max_abs_diff(&all, &reference);
            assert!(err < 1e-4, "{name} {targets:?}: prefill differs by {err}");
            let mut s = InferenceSession::new(&q, t).unwrap();
            s.prefill(&toks[..3]).unwrap();
            for i in 3..t {
                let err = max_abs_diff(s.decode(toks[i]).unwrap(), &reference[i * v..(i + 1) * v]);
                assert!(
                    err < 1e-4,
                    "{name} {targets:?}: decode at {i} differs by {err}"
                );
            }
        }
    }
}

#[test]
fn an_adapter_of_another_shape_is_refused() {
    use engine::lora::{LoraConfig, LoraParams, LoraTarget};
    let cfgs = configs();
    let (a, b) = (&cfgs[0].1, &cfgs[2].1);
    let lc = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: vec![LoraTarget::Q],
        dropout: 0.0,
    };
    let lora = LoraParams::zeros(b, &lc).unwrap();
    let mut q =
        engine::quant::QuantModel::from_params(&random_params(a, 1), |_, _, _, _| None).unwrap();
    let err = q.attach_adapter(lora).unwrap_err().to_string();
    assert!(err.contains("LoRA adapter"), "{err}");
    assert!(q.adapter.is_none());
}
