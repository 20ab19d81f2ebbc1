//! `neuralforge bench`: this machine's GEMM peak (in the `--precision` of the run), then
//! forward, forward+backward and
//! whole optimizer steps of a preset model, reported as tokens/s, model FLOP/s and MFU
//! (achieved model FLOP/s over the GEMM peak measured in the same run: the median of samples
//! taken right before each timed run, so that both see the same machine load).

use crate::output::Output;
use anyhow::{bail, Context};
use engine::gemm::sgemm;
use engine::lora::{LoraConfig, LoraParams, LoraTarget};
use engine::model::{forward_backward, forward_loss, Workspace};
use engine::optim::{decay_ranges, grad_stats, zero_grads, AdamW};
use engine::rng::Rng;
use engine::ModelConfig;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model shape: tiny, stories260k, stories15m, stories110m, smollm2-135m.
    #[arg(long, default_value = "stories110m")]
    pub preset: String,
    /// full (every weight trains) or lora (adapters only).
    #[arg(long, default_value = "full")]
    pub mode: String,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed optimizer steps (forward and forward+backward are timed as many times).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// LoRA rank (lora mode).
    #[arg(long, default_value_t = 8)]
    pub lora_rank: usize,
    /// LoRA targets, comma-separated (lora mode).
    #[arg(long, default_value = "q,k,v,o")]
    pub lora_targets: String,
    /// Operand precision of the products: f32, bf16 (AVX-512 BF16) or auto.
    #[arg(long, default_value = "f32", value_parser = crate::precision::CHOICES)]
    pub precision: String,
}

/// Best GFLOP/s of a plain GEMM of shape (m, n, k) over a few repetitions, after a warm-up.
fn gemm_gflops(m: usize, n: usize, k: usize, reps: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    sgemm(false, false, m, n, k, 1.0, &a, k, &b, n, 0.0, &mut c, n); // warm-up
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        sgemm(false, false, m, n, k, 1.0, &a, k, &b, n, 0.0, &mut c, n);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (Linux clock
/// ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Median of a few timings, in seconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    engine::threads::set_threads(args.threads).context("--threads")?;
    let (precision, precision_why) = crate::precision::apply(&args.precision)?;
    let precision = crate::precision::name(precision);
    out.log(format!("precision: {precision_why}"));
    let cfg = ModelConfig::preset(&args.preset).with_context(|| {
        format!(
            "--preset {:?}: not one of {}",
            args.preset,
            ModelConfig::PRESETS.join(", ")
        )
    })?;
    let lora_mode = match args.mode.as_str() {
        "full" => false,
        "lora" => true,
        m => bail!("--mode {m:?}: must be full or lora"),
    };
    if args.steps == 0 || args.batch_size == 0 || args.seq_len == 0 {
        bail!("--steps, --batch-size and --seq-len must be at least 1");
    }
    let (b, t) = (args.batch_size, args.seq_len);
    let n = b
        .checked_mul(t)
        .filter(|n| *n <= 1 << 24)
        .context("--batch-size x --seq-len is too large")?;
    let threads = engine::threads::current();

    // Fail early (sizes, available memory) before any large buffer exists.
    Workspace::new(&cfg, b, t, None)?;

    // 1. GEMM peak: 1024^3 and the model's largest matmuls (MLP and a classifier chunk).
    out.log(format!(
        "measuring the {precision} GEMM peak on {threads} threads ..."
    ));
    let g_square = gemm_gflops(1024, 1024, 1024, 5);
    let g_mlp = gemm_gflops(n, cfg.hidden_dim, cfg.dim, 3);
    let g_cls = gemm_gflops(n.min(256), cfg.vocab_size, cfg.dim, 3);
    // On a shared machine the GEMM speed drifts with the load, so the peak is sampled again
    // right before every timed run and the median of those samples is the MFU denominator.
    // The probes' buffers are allocated for each sample and freed at once (held for the whole
    // run they raised the peak RSS of stories110m by 34 MiB); the larger one is in the memory
    // breakdown, since the allocator may keep its pages after the free.
    let sample_peak =
        || gemm_gflops(1024, 1024, 1024, 1).max(gemm_gflops(n, cfg.hidden_dim, cfg.dim, 1));
    let probe_floats = |m: usize, n: usize, k: usize| m * k + k * n + m * n;
    let probes = 4 * probe_floats(1024, 1024, 1024).max(probe_floats(n, cfg.hidden_dim, cfg.dim));
    let peak_samples = std::cell::RefCell::new(vec![g_square.max(g_mlp).max(g_cls)]);
    // What the process holds before any model memory exists (code, libraries, thread stacks):
    // the part of the peak RSS that the model's breakdown does not cover.
    let baseline = crate::trainer::machine::status_bytes("VmRSS:").unwrap_or(0) as usize;

    // 2. Model, workspace, optimizer.
    let params_model = engine::init::init_params(&cfg, 1)?;
    let lora_cfg = if lora_mode {
        let targets = args
            .lora_targets
            .split(',')
            .map(|s| s.parse::<LoraTarget>())
            .collect::<Result<Vec<_>, _>>()
            .context("--lora-targets")?;
        Some(LoraConfig {
            rank: args.lora_rank,
            alpha: 2.0 * args.lora_rank as f64,
            targets,
            dropout: 0.0,
        })
    } else {
        None
    };
    let mut lora = match &lora_cfg {
        Some(lc) => Some(LoraParams::init(&cfg, lc, &mut Rng::new(2))?),
        None => None,
    };
    let mut params = params_model;
    let mut ws = Workspace::new(&cfg, b, t, lora_cfg.as_ref())?;
    let trainable = lora.as_ref().map_or(params.data.len(), |l| l.data.len());
    let mut grads = vec![0.0f32; trainable];
    let mut opt = AdamW::new(trainable, 0.9, 0.95, 1e-8, 0.1);
    let decay = match &lora {
        Some(l) => decay_ranges(&l.layout),
        None => decay_ranges(&params.layout),
    };
    let mut rng = Rng::new(3);
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();

    // 3. Timings (one untimed warm-up each).
    out.log(format!(
        "timing {} {} {}x{} for {} steps ...",
        args.preset, args.mode, b, t, args.steps
    ));
    let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        f()?;
        let mut v = Vec::new();
        for _ in 0..args.steps {
            peak_samples.borrow_mut().push(sample_peak());
            let s = Instant::now();
            f()?;
            v.push(s.elapsed().as_secs_f64());
        }
        Ok(median(v))
    };
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let t_fwd = time(&mut || {
        forward_loss(&params, lora.as_ref(), &mut ws, &inputs, &targets)?;
        Ok(())
    })?;
    let t_fb = time(&mut || {
        zero_grads(&mut grads);
        forward_backward(
            &params,
            lora.as_ref(),
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            &mut rng,
        )?;
        Ok(())
    })?;
    // The trainer's step: the gradient buffer starts zeroed (AdamW clears it as it updates).
    zero_grads(&mut grads);
    let t_step = time(&mut || {
        let loss = forward_backward(
            &params,
            lora.as_ref(),
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            &mut rng,
        )?;
        let scale = grad_stats(&grads, loss.count, 1.0).scale;
        match lora.as_mut() {
            Some(l) => opt.step(&mut l.data, &mut grads, scale, 1e-4, &decay),
            None => opt.step(&mut params.data, &mut grads, scale, 1e-4, &decay),
        }
        Ok(())
    })?;

    // 4. Report.
    let samples = peak_samples.into_inner();
    let peak_best = samples.iter().cloned().fold(0.0, f64::max);
    let peak = median(samples.clone());
    let p = cfg.matmul_param_count() as f64;
    let attn = 6.0 * (cfg.n_layers * t * cfg.dim) as f64;
    let train_flops = if lora_mode {
        4.0 * p + attn
    } else {
        6.0 * p + attn
    };
    let fwd_flops = 2.0 * p + attn / 3.0;
    let tok = n as f64;
    let mfu = |flops_per_token: f64, secs: f64| tok * flops_per_token / secs / (peak * 1e9);
    let weights = params.data.len() * 4;
    let adapter = lora.as_ref().map_or(0, |l| l.data.len() * 4);
    let grads_b = trainable * 4;
    let moments = 2 * trainable * 4;
    let acts = ws.bytes();
    let breakdown = weights + adapter + grads_b + moments + acts + baseline + probes;
    let rss = crate::trainer::machine::status_bytes("VmHWM:");
    // The share of `threads` cores this process actually got while timing: well below 1 means
    // other programs competed for the CPU and every number above is depressed and noisy.
    let cpu_share = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / wall0.elapsed().as_secs_f64() / threads as f64),
        _ => None,
    };
    let report = serde_json::json!({
        "preset": args.preset, "mode": args.mode, "batch": b, "seq": t, "threads": threads, "precision": precision,
        "params": cfg.param_count(), "matmul_params": cfg.matmul_param_count(), "trainable_params": trainable,
        "gemm_gflops": { "1024": g_square, "mlp": g_mlp, "classifier": g_cls, "peak": peak, "best": peak_best, "samples": samples },
        "flops_per_token": train_flops,
        "forward": { "ms": t_fwd * 1e3, "tokens_per_s": tok / t_fwd, "gflops": tok * fwd_flops / t_fwd / 1e9, "mfu": mfu(fwd_flops, t_fwd) },
        "forward_backward": { "ms": t_fb * 1e3, "tokens_per_s": tok / t_fb, "gflops": tok * train_flops / t_fb / 1e9, "mfu": mfu(train_flops, t_fb) },
        "step": { "ms": t_step * 1e3, "tokens_per_s": tok / t_step, "gflops": tok * train_flops / t_step / 1e9, "mfu": mfu(train_flops, t_step) },
        "cpu_share": cpu_share,
        "memory_bytes": { "weights": weights, "adapter": adapter, "grads": grads_b, "optimizer_moments": moments,
            "activations": acts, "process_baseline": baseline, "gemm_probes": probes, "breakdown_total": breakdown, "peak_rss": rss },
    });
    if out.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{} {} batch {b} x seq {t}, {threads} threads (CPU share while timing: {})",
        args.preset,
        args.mode,
        cpu_share.map_or("unknown".into(), |c| format!("{:.0}%", 100.0 * c))
    );
    println!(
        "GEMM peak {precision}: {peak:.1} GFLOP/s (median of {} samples, best {peak_best:.1}; first: 1024^3 {g_square:.1}, MLP {g_mlp:.1}, classifier {g_cls:.1})",
        samples.len()
    );
    for (name, secs, flops) in [
        ("forward", t_fwd, fwd_flops),
        ("fwd+bwd", t_fb, train_flops),
        ("step", t_step, train_flops),
    ] {
        println!(
            "{name:>8}: {:8.1} ms  {:8.0} tok/s  {:6.1} GFLOP/s  MFU {:5.1}%",
            secs * 1e3,
            tok / secs,
            tok * flops / secs / 1e9,
            100.0 * mfu(flops, secs)
        );
    }
    println!(
        "memory: weights {:.1} MiB, adapter {:.1} MiB, grads {:.1} MiB, moments {:.1} MiB, activations {:.1} MiB, process baseline {:.1} MiB, GEMM probe {:.1} MiB = {:.1} MiB; peak RSS {}",
        mib(weights), mib(adapter), mib(grads_b), mib(moments), mib(acts), mib(baseline), mib(probes), mib(breakdown),
        rss.map_or("unknown".into(), |r| format!("{:.1} MiB ({:.2}x)", mib(r as usize), r as f64 / breakdown as f64))
    );
    Ok(())
}
