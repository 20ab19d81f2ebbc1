//! Sampling: deterministic per seed, the filters do what they say, draws follow the softmax.

use engine::infer::{argmax, Sampler, SamplerConfig};

fn logits() -> Vec<f32> {
    vec![1.0, 3.0, 0.5, 2.5, -1.0, 2.9, 0.0, 1.5]
}

fn draws(cfg: SamplerConfig, n: usize) -> Vec<u32> {
    let mut s = Sampler::new(cfg).expect("valid sampler");
    (0..n).map(|_| s.sample(&logits())).collect()
}

fn plain(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        seed,
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    assert_eq!(draws(plain(42), 200), draws(plain(42), 200));
    assert_ne!(draws(plain(42), 200), draws(plain(43), 200));
}

#[test]
fn temperature_zero_is_argmax() {
    assert_eq!(argmax(&logits()), 1);
    assert!(draws(SamplerConfig::greedy(), 20).iter().all(|&t| t == 1));
}

#[test]
fn filters_that_keep_one_token_are_greedy() {
    let top_k = SamplerConfig {
        top_k: 1,
        ..plain(1)
    };
    let top_p = SamplerConfig {
        top_p: 1e-6,
        ..plain(2)
    };
    let min_p = SamplerConfig {
        min_p: 1.0,
        ..plain(3)
    };
    for cfg in [top_k, top_p, min_p] {
        assert!(draws(cfg.clone(), 50).iter().all(|&t| t == 1), "{cfg:?}");
    }
}

#[test]
fn top_k_keeps_only_the_k_best() {
    let got = draws(
        SamplerConfig {
            top_k: 3,
            ..plain(9)
        },
        500,
    );
    assert!(got.iter().all(|t| [1, 5, 3].contains(t)));
    for t in [1, 5, 3] {
        assert!(got.contains(&t), "token {t} never drawn");
    }
}

#[test]
fn draws_follow_the_softmax() {
    let n = 20000;
    let got = draws(plain(5), n);
    let l = logits();
    let max = l.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    for (i, p) in e.iter().map(|x| x / z).enumerate() {
        let freq = got.iter().filter(|&&t| t as usize == i).count() as f64 / n as f64;
        assert!((freq - p).abs() < 0.015, "token {i}: {freq} vs {p}");
    }
}

#[test]
fn repeat_penalty_looks_back_repeat_last_n_tokens() {
    let cfg = SamplerConfig {
        repeat_penalty: 10.0,
        repeat_last_n: 2,
        ..SamplerConfig::greedy()
    };
    let mut s = Sampler::new(cfg).expect("valid");
    s.accept(1);
    assert_eq!(s.sample(&logits()), 5, "1 is penalised");
    // Recent is now [1, 5]: both penalised, 3 wins.
    assert_eq!(s.sample(&logits()), 3);
    // Recent [5, 3]: 1 has left the window.
    assert_eq!(s.sample(&logits()), 1);
}

#[test]
fn invalid_settings_are_rejected() {
    for cfg in [
        SamplerConfig {
            temperature: -1.0,
            ..plain(0)
        },
        SamplerConfig {
            top_p: 0.0,
            ..plain(0)
        },
        SamplerConfig {
            min_p: 1.5,
            ..plain(0)
        },
        SamplerConfig {
            repeat_penalty: 0.0,
            ..plain(0)
        },
        SamplerConfig {
            temperature: f32::NAN,
            ..plain(0)
        },
    ] {
        assert!(Sampler::new(cfg).is_err());
    }
}
