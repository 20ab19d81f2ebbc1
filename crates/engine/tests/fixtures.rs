//! The engine against PyTorch: logits, loss, every gradient, and the AdamW / LoRA training
//! trajectories of ../shared/fixtures (see its README for what each file holds).

mod common;

use common::*;
use engine::model::{self, Workspace};
use engine::optim::{decay_ranges, grad_stats, AdamW, LrSchedule, ScheduleKind};
use engine::rng::Rng;
use safetensors::SafeTensors;

const FIXTURES: [&str; 2] = ["tiny-llama", "tiny-llama-tied"];

/// Mean loss, the gradient summed over target tokens, and the number of targets.
fn summed_grads(f: &Fixture) -> (f64, Vec<f32>, usize) {
    let mut ws = Workspace::new(&f.params.config, f.batch, f.seq, None).unwrap();
    let mut grads = vec![0.0; f.params.data.len()];
    let loss = model::forward_backward(
        &f.params,
        None,
        &mut grads,
        &mut ws,
        &f.inputs,
        &f.targets,
        &mut Rng::new(0),
    )
    .unwrap();
    (loss.mean(), grads, loss.count)
}

fn mean_grads(f: &Fixture) -> (f64, Vec<f32>) {
    let (loss, mut grads, count) = summed_grads(f);
    let inv = 1.0 / count as f32;
    grads.iter_mut().for_each(|g| *g *= inv);
    (loss, grads)
}

#[test]
fn logits_loss_and_every_gradient_match_pytorch() {
    for name in FIXTURES {
        let Some(f) = load(name) else { return };
        let bytes = std::fs::read(f.dir.join("forward_backward.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let logits = model::logits(&f.params, None, &f.inputs, f.batch, f.seq).unwrap();
        let expected = f32s(&st, "logits");
        let max_err = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 1e-4, "{name}: logits max abs error {max_err}");

        let (loss, grads) = mean_grads(&f);
        let want = f.expected["initial"]["loss"].as_f64().unwrap();
        assert!((loss - want).abs() < 1e-4, "{name}: loss {loss} vs {want}");
        let mut ws = Workspace::new(&f.params.config, f.batch, f.seq, None).unwrap();
        let eval = model::forward_loss(&f.params, None, &mut ws, &f.inputs, &f.targets).unwrap();
        assert!((eval.mean() - want).abs() < 1e-4);
        for t in &f.params.layout.tensors {
            let want = f32s(&st, &format!("grad.{}", t.name));
            let err = rel_l2(&grads[t.range()], &want);
            assert!(err < 1e-3, "{name}: gradient of {} off by {err}", t.name);
        }
    }
}

#[test]
fn full_adamw_trajectory_matches_pytorch() {
    for name in FIXTURES {
        let Some(mut f) = load(name) else { return };
        let ft = &f.expected["full_training"];
        let h = &ft["hyperparameters"];
        let hp = |k: &str| h[k].as_f64().unwrap();
        let sched = LrSchedule {
            kind: ScheduleKind::Cosine,
            lr_max: hp("lr_max"),
            lr_min: hp("lr_min"),
            warmup: hp("warmup") as u64,
            total_steps: hp("steps") as u64,
        };
        let mut opt = AdamW::new(
            f.params.data.len(),
            hp("beta1") as f32,
            hp("beta2") as f32,
            hp("eps") as f32,
            hp("weight_decay") as f32,
        );
        let decay = decay_ranges(&f.params.layout);
        for (s, want) in ft["trajectory"].as_array().unwrap().iter().enumerate() {
            // The trainer's path: the summed gradient, averaged and clipped inside the step.
            let (loss, mut grads, count) = summed_grads(&f);
            let stats = grad_stats(&grads, count, hp("clip"));
            let norm = stats.norm;
            let lr = sched.lr_at(s as u64);
            let wl = want["loss"].as_f64().unwrap();
            let wn = want["grad_norm"].as_f64().unwrap();
            assert!((lr - want["lr"].as_f64().unwrap()).abs() < 1e-12);
            assert!(
                (loss - wl).abs() < 1e-3,
                "{name} step {s}: loss {loss} vs {wl}"
            );
            assert!(
                (norm - wn).abs() < 1e-3 * wn.max(1.0),
                "{name} step {s}: norm {norm} vs {wn}"
            );
            opt.step(&mut f.params.data, &mut grads, stats.scale, lr, &decay);
        }
    }
}

#[test]
fn lora_trajectory_matches_peft() {
    for name in FIXTURES {
        let Some(f) = load(name) else { return };
        let cfg = f.params.config.clone();
        let mut lp = load_adapter(&f.dir.join("lora_init"), &cfg);
        let after = load_adapter(&f.dir.join("lora_after"), &cfg);
        let lt = &f.expected["lora_training"];
        let lr = lt["hyperparameters"]["lr"].as_f64().unwrap();
        let mut opt = AdamW::new(lp.data.len(), 0.9, 0.999, 1e-8, 0.0);
        let mut ws = Workspace::new(&cfg, f.batch, f.seq, Some(&lp.config)).unwrap();
        for (s, want) in lt["trajectory"].as_array().unwrap().iter().enumerate() {
            let mut grads = vec![0.0; lp.data.len()];
            let loss = model::forward_backward(
                &f.params,
                Some(&lp),
                &mut grads,
                &mut ws,
                &f.inputs,
                &f.targets,
                &mut Rng::new(0),
            )
            .unwrap();
            let scale = grad_stats(&grads, loss.count, 0.0).scale;
            let wl = want["loss"].as_f64().unwrap();
            assert!(
                (loss.mean() - wl).abs() < 1e-3,
                "{name} step {s}: loss {} vs {wl}",
                loss.mean()
            );
            opt.step(&mut lp.data, &mut grads, scale, lr, &[]);
        }
        let err = rel_l2(&lp.data, &after.data);
        assert!(err < 1e-3, "{name}: adapter after training off by {err}");
    }
}

#[test]
fn two_micro_batches_of_one_equal_one_batch_of_two() {
    let Some(f) = load("tiny-llama") else { return };
    let (_, whole) = mean_grads(&f);
    let cfg = &f.params.config;
    let mut ws = Workspace::new(cfg, 1, f.seq, None).unwrap();
    let mut grads = vec![0.0; f.params.data.len()];
    let mut total = 0;
    for b in 0..2 {
        let r = b * f.seq..(b + 1) * f.seq;
        let l = model::forward_backward(
            &f.params,
            None,
            &mut grads,
            &mut ws,
            &f.inputs[r.clone()],
            &f.targets[r],
            &mut Rng::new(0),
        )
        .unwrap();
        total += l.count;
    }
    grads.iter_mut().for_each(|g| *g /= total as f32);
    assert!(rel_l2(&grads, &whole) < 1e-5, "{}", rel_l2(&grads, &whole));
}
