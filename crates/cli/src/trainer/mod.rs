//! The training run: loop, checkpoints, resume, signals, progress (used by `cmd::train`).

pub mod config;
pub mod corpus;
pub mod data_source;
pub mod dataset;
pub mod events;
pub mod lock;
pub mod machine;
pub mod model_setup;
pub mod settings;
pub mod signals;
pub mod state;

use crate::output::{Coded, Output};
use anyhow::Context;
use config::TrainConfig;
use data::windows::{window_count, window_range, WindowOrder};
use data_source::TokenData;
use engine::frozen::Base;
use engine::lora::LoraParams;
use engine::model::{forward_backward, forward_loss, LossSum, Workspace, IGNORE_INDEX};
use engine::optim::{decay_ranges, grad_stats, zero_grads, AdamW, LrSchedule};
use engine::quant::QuantModel;
use engine::rng::Rng;
use engine::{ModelConfig, ParamLayout, Params};
use events::Events;
use protocol::Event;
use settings::Settings;
use signals::StopSignal;
use state::{finite, TrainerState};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Exit status of a run stopped by non-finite losses.
pub const EXIT_NONFINITE: i32 = 6;

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All steps done (or early stopping); the final model is in `dir`.
    Finished { run_dir: PathBuf, final_loss: f64 },
    /// Stopped by a signal after checkpointing; exit with this status.
    Interrupted { run_dir: PathBuf, exit_code: i32 },
    /// `--dry-run`: resolved and reported, nothing trained.
    DryRun,
}

/// Whether `Trainer::start` prepares a real run or only resolves one (`--dry-run`).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Train,
    DryRun,
}

/// The honest device string of `init`: "cpu (N threads, avx512)".
pub fn device_string(threads: usize) -> String {
    #[cfg(target_arch = "x86_64")]
    let isa = if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "sse2"
    };
    #[cfg(target_arch = "aarch64")]
    let isa = "neon";
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let isa = "scalar";
    format!("cpu ({threads} threads, {isa})")
}

/// FLOPs per trained token: 6 P + 6 L T d for full training (forward 2P, backward 4P, plus
/// attention); LoRA skips the frozen weights' gradients: 4 P + 6 L T d + 6 P_lora.
pub fn flops_per_token(cfg: &ModelConfig, seq: usize, lora_params: usize) -> f64 {
    let p = cfg.matmul_param_count() as f64;
    let attn = 6.0 * (cfg.n_layers * seq * cfg.dim) as f64;
    if lora_params > 0 {
        4.0 * p + attn + 6.0 * lora_params as f64
    } else {
        6.0 * p + attn
    }
}

/// `s` as one shell word: bare when it is made of safe characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Resolves the settings (fresh run or resume) into a config and the run folder.
fn resolve(flags: &Settings) -> anyhow::Result<(TrainConfig, bool)> {
    let file = match &flags.config {
        Some(p) => Settings::from_toml_file(p)?,
        None => Settings::default(),
    };
    let given = file.clone().overlaid(flags);
    if given.lora_rank.unwrap_or(0) == 0 {
        let lora_only = [
            ("lora-alpha", given.lora_alpha.is_some()),
            ("lora-targets", given.lora_targets.is_some()),
            ("lora-dropout", given.lora_dropout.is_some()),
            ("base-dtype", given.base_dtype.is_some()),
        ];
        if let Some((flag, _)) = lora_only.iter().find(|(_, set)| *set) {
            // A resumed LoRA run keeps its saved rank; only a fresh run can forget it.
            if flags.resume.is_none() {
                return Err(Coded::new(
                    "invalid_argument",
                    config::EXIT_USAGE,
                    format!(
                        "--{flag} is a LoRA option but --lora-rank is not given: add \
                         --lora-rank R (e.g. 8) to train an adapter, or drop --{flag} for \
                         full training"
                    ),
                )
                .into());
            }
        }
    }
    let Some(resume) = &flags.resume else {
        return Ok((TrainConfig::resolve(&given)?, false));
    };
    let run_dir = resume
        .clone()
        .or_else(|| flags.out.clone())
        .ok_or_else(|| {
            Coded::new(
                "invalid_argument",
                config::EXIT_USAGE,
                "--resume needs a run folder: --resume RUN_DIR (or --out RUN_DIR)",
            )
        })?;
    let saved_path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&saved_path).map_err(|e| {
        state::ckpt_err(format!(
            "cannot resume {}: {} is unreadable ({e})",
            run_dir.display(),
            saved_path.display()
        ))
    })?;
    let saved: TrainConfig = toml::from_str(&text)
        .map_err(|e| state::ckpt_err(format!("{}: {e}", saved_path.display())))?;
    let mut merged = saved.to_settings().overlaid(&file).overlaid(flags);
    // Shape-defining settings must not change; say so before anything else can fail.
    let changed = TrainConfig::resolve(&merged)
        .ok()
        .and_then(|c| c.incompatibility(&saved))
        .or_else(|| {
            let new_rank = merged.lora_rank.unwrap_or(0);
            (new_rank != saved.lora_rank).then(|| {
                format!(
                    "--lora-rank is {new_rank} but the checkpoint was trained with {}",
                    saved.lora_rank
                )
            })
        });
    if let Some(why) = changed {
        return Err(state::ckpt_err(format!(
            "cannot resume {}: {why}",
            run_dir.display()
        )));
    }
    merged.out = Some(run_dir);
    Ok((TrainConfig::resolve(&merged)?, true))
}

/// The whole `neuralforge train` command.
pub fn run(flags: Settings, out: &Output) -> anyhow::Result<Outcome> {
    let (mut cfg, resuming) = resolve(&flags)?;
    cfg.allow_tokenizer_mismatch = flags.allow_tokenizer_mismatch;
    if flags.dry_run {
        return dry_run(cfg, resuming, out);
    }
    let show_bar = !flags.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut ev = Events::new(out, show_bar);
    let run_dir = cfg.out.clone();
    let created = !run_dir.exists();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating run folder {}", run_dir.display()))?;
    // A start that fails leaves no folder behind that this process made.
    let cleanup = |e: anyhow::Error| {
        if created {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        e
    };
    // Before anything is read or written there: one writer per run folder.
    let lock = lock::RunLock::acquire(&run_dir).map_err(cleanup)?;
    if !resuming && !checkpoint_dirs_empty(&run_dir)? {
        return Err(Coded::new(
            "exists",
            config::EXIT_EXISTS,
            format!(
                "{} already holds a run with checkpoints: continue it with --resume {0} or \
                 pick another --out",
                run_dir.display()
            ),
        )
        .into());
    }
    ev.open_log(&run_dir.join("events.ndjson"))?;
    // A process killed while saving leaves hidden temporaries; they are never checkpoints.
    formats::checkpoint::remove_stale_temporaries(&run_dir.join("checkpoints"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stop = StopSignal::install()?;
    let started = Trainer::start(cfg, resuming, &mut ev, &stop, Mode::Train);
    let mut trainer = match started {
        Ok(t) => t,
        Err(e) if created => {
            ev.finish();
            drop(ev);
            drop(lock);
            return Err(cleanup(e));
        }
        Err(e) => return Err(record_failure(&mut ev, e)),
    };
    let result = trainer.train(&mut ev);
    match result {
        Ok(outcome) => {
            trainer.summary(&ev, &outcome);
            Ok(outcome)
        }
        Err(e) => Err(record_failure(&mut ev, e)),
    }
}

/// stdout gets the error from main; the run's own log must have it too.
fn record_failure(ev: &mut Events, e: anyhow::Error) -> anyhow::Error {
    ev.finish();
    let line = Event::Error {
        message: crate::output::describe(&e),
        code: crate::output::error_code(&e).into(),
    };
    ev.record_only(&line);
    e
}

/// `train --dry-run`: everything a run would resolve and load, reported, and nothing written.
fn dry_run(cfg: TrainConfig, resuming: bool, out: &Output) -> anyhow::Result<Outcome> {
    let mut ev = Events::new(out, false);
    let stop = StopSignal::inert();
    let t = Trainer::start(cfg, resuming, &mut ev, &stop, Mode::DryRun)?;
    let config = serde_json::to_value(&t.cfg)?;
    ev.emit(&Event::Info {
        key: "dry_run".into(),
        value: serde_json::json!({
            "config": config,
            "resuming": resuming,
            "resume_step": t.st.step,
            "free_memory_bytes": free_memory_bytes(),
        }),
    });
    if !out.json {
        let text = toml::to_string(&t.cfg).context("printing the config")?;
        println!("{text}");
        out.log("dry run: nothing was trained or written");
    }
    Ok(Outcome::DryRun)
}

/// MemAvailable from /proc/meminfo (None elsewhere).
pub fn free_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn checkpoint_dirs_empty(run_dir: &Path) -> anyhow::Result<bool> {
    Ok(formats::checkpoint::list(&run_dir.join("checkpoints"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_empty())
}

/// The batch buffers of one micro-step.
struct Batch {
    windows: Vec<usize>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl Batch {
    fn new(b: usize, t: usize) -> Batch {
        Batch {
            windows: Vec::with_capacity(b),
            inputs: vec![0; b * t],
            targets: vec![IGNORE_INDEX; b * t],
        }
    }

    /// Fills rows from `windows` (rows past the list are padding: no targets).
    fn fill(&mut self, data: &TokenData, t: usize) {
        self.inputs.fill(0);
        self.targets.fill(IGNORE_INDEX);
        for (row, &w) in self.windows.iter().enumerate() {
            let r = window_range(w, t);
            let toks = &data.tokens[r.clone()];
            self.inputs[row * t..row * t + t].copy_from_slice(&toks[..t]);
            let tg = &mut self.targets[row * t..row * t + t];
            tg.copy_from_slice(&toks[1..]);
            if let Some(mask) = &data.mask {
                for (x, &m) in tg.iter_mut().zip(&mask[r.start + 1..r.end]) {
                    if m == 0 {
                        *x = IGNORE_INDEX;
                    }
                }
            }
        }
    }
}

/// The weights the passes read: the quantized base when there is one.
fn base<'a>(params: &'a Params, quant: &'a Option<QuantModel>) -> Base<'a> {
    match quant {
        Some(q) => Base::Quant(q),
        None => Base::F32(params),
    }
}

struct Trainer {
    cfg: TrainConfig,
    params: Params,
    /// A LoRA run's frozen base kept quantized (QLoRA); `params` then holds no weights.
    quant: Option<QuantModel>,
    lora: Option<LoraParams>,
    save: formats::hf::SaveOptions,
    train: TokenData,
    val: Option<TokenData>,
    val_windows: usize,
    ws: Workspace,
    grads: Vec<f32>,
    adam: AdamW,
    decay: Vec<std::ops::Range<usize>>,
    sched: LrSchedule,
    order: WindowOrder,
    rng: Rng,
    st: TrainerState,
    flops_per_token: f64,
    /// The engine's GEMM rate on this machine, measured once at start (MFU's denominator).
    peak_flops: f64,
    stop: StopSignal,
    last_ckpt_step: Option<u64>,
    /// The products' precision (`--precision`, resolved).
    precision: engine::gemm::Precision,
}

/// SHA-256 (hex) of the base model of a LoRA run: its file, or a model folder's files (names
/// and contents, in name order). `None` when the run trains every weight (the checkpoint then
/// holds the whole model).
fn base_fingerprint(cfg: &TrainConfig) -> anyhow::Result<Option<String>> {
    match (cfg.lora_rank > 0, cfg.model.as_deref()) {
        (true, Some(path)) => crate::base_record::fingerprint(path).map(Some),
        _ => Ok(None),
    }
}

impl Trainer {
    fn start(
        cfg: TrainConfig,
        resuming: bool,
        ev: &mut Events,
        stop: &StopSignal,
        mode: Mode,
    ) -> anyhow::Result<Trainer> {
        engine::threads::set_threads(cfg.threads)?;
        let threads = engine::threads::current();
        let (precision, precision_why) = crate::precision::apply(&cfg.precision)?;
        ev.emit(&Event::Phase {
            phase: "loading".into(),
        });
        let setup = model_setup::setup(&cfg)?;
        let shape = setup.params.config.clone();
        let lora_cfg = cfg.lora_config()?;
        let lora = match &lora_cfg {
            Some(l) => {
                l.validate(&shape).map_err(|e| {
                    Coded::new(
                        "invalid_argument",
                        config::EXIT_USAGE,
                        format!("--lora-*: {e}"),
                    )
                })?;
                let mut rng = Rng::new(cfg.seed ^ 0x10AA_10AA);
                Some(LoraParams::init(&shape, l, &mut rng)?)
            }
            None => None,
        };
        ev.emit(&Event::Phase {
            phase: "preparing".into(),
        });
        for d in std::iter::once(&cfg.data).chain(cfg.val_data.as_ref()) {
            if d.is_dir() {
                crate::inputs::check_dataset_tokenizer(
                    d,
                    setup.tokenizer.as_ref(),
                    cfg.allow_tokenizer_mismatch,
                )?;
            }
        }
        let enc = setup.tokenizer.as_ref().map(model_setup::TokEncode);
        let enc_ref = enc.as_ref().map(|e| e as &dyn data_source::Encode);
        let mut train = data_source::load(&cfg.data, &cfg.token_dtype, enc_ref, shape.vocab_size)?;
        let val = match (&cfg.val_data, cfg.val_split > 0.0) {
            (Some(p), _) => {
                // An ingested folder given as validation data: its val split, else its train.
                let v =
                    data_source::load_split(p, "val", &cfg.token_dtype, enc_ref, shape.vocab_size)?;
                match v {
                    Some(v) => Some(v),
                    None => data_source::load_split(
                        p,
                        "train",
                        &cfg.token_dtype,
                        enc_ref,
                        shape.vocab_size,
                    )?,
                }
            }
            (None, true) => Some(train.split_tail(cfg.val_split)),
            // An ingested training folder brings its own val split.
            (None, false) if cfg.data.is_dir() => data_source::load_split(
                &cfg.data,
                "val",
                &cfg.token_dtype,
                enc_ref,
                shape.vocab_size,
            )?,
            _ => None,
        };
        let data_err = |what: &str, e: data::windows::WindowError| -> anyhow::Error {
            Coded::new("data", data_source::EXIT_DATA, format!("{what}: {e}")).into()
        };
        let windows = window_count(train.tokens.len(), cfg.seq_len)
            .map_err(|e| data_err(&format!("training data {}", cfg.data.display()), e))?;
        let val_windows = match &val {
            Some(v) => {
                let w = window_count(v.tokens.len(), cfg.seq_len)
                    .map_err(|e| data_err("validation data", e))?;
                let want = if cfg.val_windows > 0 {
                    cfg.val_windows
                } else {
                    cfg.val_batches * cfg.batch_size as u64
                };
                w.min(want as usize)
            }
            None => 0,
        };
        let ws = Workspace::new(&shape, cfg.batch_size, cfg.seq_len, lora_cfg.as_ref())?;
        let (layout, n_train) = match &lora {
            Some(l) => (l.layout.clone(), l.data.len()),
            None => (setup.params.layout.clone(), setup.params.data.len()),
        };
        let adam = AdamW::new(
            n_train,
            cfg.beta1 as f32,
            cfg.beta2 as f32,
            cfg.eps as f32,
            cfg.weight_decay as f32,
        );
        let decay = decay_ranges(&layout);
        let sched = LrSchedule {
            kind: cfg.schedule_kind(),
            lr_max: cfg.lr,
            lr_min: cfg.lr_min,
            warmup: cfg.warmup,
            total_steps: cfg.steps,
        };
        let order = WindowOrder::new(cfg.order(), windows, cfg.seed);
        let st = TrainerState {
            step: 0,
            adam_t: 0,
            micro_steps: 0,
            tokens_seen: 0,
            config: cfg.clone(),
            model: shape.clone(),
            order: order.state().clone(),
            dropout_rng: Rng::new(cfg.seed ^ 0xD20F_0D20).state(),
            last_loss: None,
            best_loss: None,
            best_val: None,
            best_val_step: None,
            bad_evals: 0,
            elapsed_s: 0.0,
            base_sha256: base_fingerprint(&cfg)?,
            precision: Some(crate::precision::name(precision).into()),
        };
        let lora_n = lora.as_ref().map_or(0, |l| l.data.len());
        let mut t = Trainer {
            rng: Rng::from_state(st.dropout_rng),
            flops_per_token: flops_per_token(&shape, cfg.seq_len, lora_n),
            peak_flops: machine::measured_peak_flops(),
            grads: vec![0.0; n_train],
            params: setup.params,
            quant: setup.quant,
            save: setup.save,
            stop: stop.clone(),
            last_ckpt_step: None,
            precision,
            cfg,
            lora,
            train,
            val,
            val_windows,
            ws,
            adam,
            decay,
            sched,
            order,
            st,
        };
        if resuming {
            t.restore(ev, &layout, mode)?;
        } else if mode == Mode::Train {
            let text = toml::to_string(&t.cfg).context("writing config.toml")?;
            let p = t.cfg.out.join("config.toml");
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        t.announce(ev, threads, windows, &setup.description);
        ev.log(format!("precision: {precision_why}"));
        Ok(t)
    }

    /// Bytes of the base weights held in memory.
    fn base_bytes(&self) -> u64 {
        match &self.quant {
            Some(q) => q.weight_bytes() + 4 * (q.layers.len() as u64 * 2 + 1) * q.config.dim as u64,
            None => self.params.data.len() as u64 * 4,
        }
    }

    fn trainable_layout(&self) -> std::sync::Arc<ParamLayout> {
        match &self.lora {
            Some(l) => l.layout.clone(),
            None => self.params.layout.clone(),
        }
    }

    /// Continues from the run's latest checkpoint.
    fn restore(&mut self, ev: &mut Events, layout: &ParamLayout, mode: Mode) -> anyhow::Result<()> {
        let ckpts = self.cfg.out.join("checkpoints");
        let (c, saved) = state::open_latest(&ckpts)?.ok_or_else(|| {
            state::ckpt_err(format!(
                "cannot resume: {} holds no checkpoint",
                ckpts.display()
            ))
        })?;
        if let Some(why) = self.cfg.incompatibility(&saved.config) {
            return Err(state::ckpt_err(format!(
                "cannot resume from {}: {why}",
                c.dir.display()
            )));
        }
        if let (Some(then), Some(now)) = (&saved.base_sha256, &self.st.base_sha256) {
            if then != now {
                return Err(state::ckpt_err(format!(
                    "cannot resume from {}: the base model {} changed since the checkpoint \
                     was written (sha256 {then:.12}… then, {now:.12}… now); the adapter \
                     belongs to the old base",
                    c.dir.display(),
                    self.cfg
                        .model
                        .as_deref()
                        .unwrap_or(std::path::Path::new("?"))
                        .display(),
                )));
            }
        }
        if saved.model != self.params.config {
            return Err(state::ckpt_err(format!(
                "cannot resume from {}: the checkpoint is for a model of shape {:?}, this \
                 model is {:?}",
                c.dir.display(),
                saved.model,
                self.params.config
            )));
        }
        if self.cfg.steps < saved.step {
            return Err(Coded::new(
                "invalid_argument",
                config::EXIT_USAGE,
                format!(
                    "--steps is {}, but the checkpoint already did {} steps",
                    self.cfg.steps, saved.step
                ),
            )
            .into());
        }
        let weights = match &mut self.lora {
            Some(l) => &mut l.data[..],
            None => &mut self.params.data[..],
        };
        state::restore_tensors(&c, layout, weights, &mut self.adam, saved.adam_t)?;
        self.order = WindowOrder::restore(&saved.order, self.order.windows()).map_err(|e| {
            Coded::new(
                "data",
                data_source::EXIT_DATA,
                format!("cannot resume: the training data changed: {e}"),
            )
        })?;
        self.rng = Rng::from_state(saved.dropout_rng);
        let config = self.cfg.clone();
        let base_sha256 = self.st.base_sha256.take();
        let precision = self.st.precision.take();
        let then = saved.precision.as_deref().unwrap_or("f32");
        if precision.as_deref() != Some(then) {
            // Allowed (e.g. an `auto` run moved to another CPU), but no longer an exact repeat.
            ev.log(format!(
                "warning: the checkpoint's steps ran in {then} products, these run in {}: \
                 the losses will not repeat those of an uninterrupted run",
                precision.as_deref().unwrap_or("f32")
            ));
        }
        self.st = TrainerState {
            config,
            base_sha256,
            precision,
            ..saved
        };
        self.last_ckpt_step = Some(self.st.step);
        if mode == Mode::DryRun {
            return Ok(());
        }
        // The resolved config now in effect (e.g. raised --steps) replaces the saved one.
        let text = toml::to_string(&self.cfg).context("writing config.toml")?;
        std::fs::write(self.cfg.out.join("config.toml"), text).context("writing config.toml")?;
        ev.emit(&Event::Restart {
            step: self.st.step,
            reason: format!("resumed from {}", c.dir.display()),
        });
        ev.log(format!(
            "resumed from step {} of {} ({})",
            self.st.step,
            self.cfg.steps,
            c.dir.display()
        ));
        Ok(())
    }

    fn announce(&self, ev: &mut Events, threads: usize, windows: usize, desc: &str) {
        let c = &self.cfg;
        let shape = &self.params.config;
        let params = self.params.layout.total as u64;
        let trainable = self.grads.len() as u64;
        let base_bytes = self.base_bytes();
        let mode = if self.lora.is_some() {
            "lora"
        } else if c.init.is_some() {
            "pretrain"
        } else {
            "finetune"
        };
        ev.emit(&Event::Init {
            protocol: protocol::PROTOCOL_VERSION,
            params,
            trainable_params: trainable,
            layers: shape.n_layers as u32,
            dim: shape.dim as u32,
            hidden: shape.hidden_dim as u32,
            heads: shape.n_heads as u32,
            seq: c.seq_len as u32,
            vocab: shape.vocab_size as u32,
            mode: mode.into(),
            device: device_string(threads),
            threads: threads as u32,
            timestamp: protocol::unix_timestamp(),
            precision: Some(crate::precision::name(self.precision).into()),
        });
        if let Some(l) = &self.lora {
            ev.emit(&Event::Info {
                key: "lora".into(),
                value: serde_json::json!({
                    "rank": l.config.rank, "alpha": l.config.alpha,
                    "targets": l.config.targets.iter().map(|t| t.short()).collect::<Vec<_>>(),
                    "dropout": l.config.dropout, "params": trainable,
                    "base_dtype": c.base_dtype, "base_bytes": base_bytes,
                    "base_quantized": self.quant.is_some(),
                    "base_storage": self.quant.as_ref().map_or("F32".into(), |q| q.type_summary()),
                }),
            });
        }
        let per_step = c.tokens_per_step();
        let total_tokens = per_step * c.steps;
        let train_tokens = self.train.tokens.len() as u64;
        let mem = base_bytes
            + trainable * 4 * 3
            + self.ws.bytes() as u64
            + train_tokens * 4
            + self.val.as_ref().map_or(0, |v| v.tokens.len() as u64 * 4);
        let gflop_step = self.flops_per_token * per_step as f64 / 1e9;
        // A checkpoint holds the trainable weights and both AdamW moments; the final model
        // and best/ hold the weights (an adapter for LoRA).
        let checkpoint_bytes = trainable * 12;
        let kept = if c.keep_checkpoints == 0 {
            c.steps.div_ceil(c.ckpt_every.max(1)).max(1)
        } else {
            c.keep_checkpoints as u64
        };
        let disk_bytes = checkpoint_bytes * kept + trainable * 4 * 2;
        ev.emit(&Event::Info {
            key: "plan".into(),
            value: serde_json::json!({
                "tokens_per_step": per_step, "total_tokens": total_tokens,
                "train_tokens": train_tokens, "train_windows": windows,
                "epochs": total_tokens as f64 / (windows as f64 * c.seq_len as f64),
                "val_windows": self.val_windows, "memory_bytes": mem,
                "gflop_per_step": gflop_step, "run_dir": c.out,
                "checkpoint_bytes": checkpoint_bytes, "disk_bytes": disk_bytes,
            }),
        });
        ev.log(format!("model: {desc}"));
        ev.log(format!(
            "parameters: {} total, {} trainable ({mode}); device {}",
            human(params as f64),
            human(trainable as f64),
            device_string(threads)
        ));
        ev.log(format!(
            "batch: {} x {} tokens x {} accum = {} tokens/step; {} steps = {} tokens \
             ({:.2} epochs of {} windows from {})",
            c.batch_size,
            c.seq_len,
            c.accum,
            per_step,
            c.steps,
            human(total_tokens as f64),
            total_tokens as f64 / (windows as f64 * c.seq_len as f64),
            windows,
            self.train.source
        ));
        ev.log(format!(
            "memory: about {} MiB (weights {} MiB, grads+AdamW {} MiB, activations {} MiB)",
            mem >> 20,
            base_bytes >> 20,
            (trainable * 12) >> 20,
            self.ws.bytes() >> 20
        ));
        ev.log(format!(
            "compute: {gflop_step:.2} GFLOP per step; measured throughput and ETA follow the \
             first step"
        ));
        ev.log(format!("run folder: {}", c.out.display()));
    }

    /// The end-of-run summary on stderr: losses with their steps, tokens, time, where the
    /// results are, and how to continue.
    fn summary(&self, ev: &Events, outcome: &Outcome) {
        let st = &self.st;
        let dir = &self.cfg.out;
        let fmt = |v: Option<f64>, step: Option<u64>| match (v, step) {
            (Some(v), Some(s)) => format!("{v:.4} (step {s})"),
            (Some(v), None) => format!("{v:.4}"),
            _ => "-".into(),
        };
        let (last_val, last_val_step) = match ev.last_val() {
            Some((s, v)) => (Some(v), Some(s)),
            None => (None, None),
        };
        let interrupted = matches!(outcome, Outcome::Interrupted { .. });
        let mut lines = vec![
            format!(
                "{} at step {}/{}",
                if interrupted { "stopped" } else { "finished" },
                st.step,
                self.cfg.steps
            ),
            format!("  train loss   {}", fmt(st.last_loss, Some(st.step))),
            format!("  val loss     {}", fmt(last_val, last_val_step)),
            format!("  best val     {}", fmt(st.best_val, st.best_val_step)),
            format!(
                "  tokens       {} in {}",
                human(st.tokens_seen as f64),
                events::clock(st.elapsed_s)
            ),
        ];
        let final_dir = dir.join(if self.lora.is_some() {
            "adapter"
        } else {
            "model"
        });
        for (what, p) in [("final", &final_dir), ("best", &dir.join("best"))] {
            if (!interrupted || what == "best") && p.exists() {
                lines.push(format!("  {what:<12} {}", p.display()));
            }
        }
        if let Ok(Some((_, latest))) =
            formats::checkpoint::list(&dir.join("checkpoints")).map(|l| l.last().cloned())
        {
            lines.push(format!("  checkpoint   {}", latest.display()));
        }
        let resume = format!(
            "neuralforge train --resume {}",
            shell_quote(&dir.display().to_string())
        );
        if interrupted {
            lines.push(format!("  continue     {resume}"));
        } else {
            lines.push(format!(
                "  train longer {resume} --steps {}",
                self.cfg.steps * 2
            ));
        }
        for l in lines {
            ev.log(l);
        }
    }

    fn trainable(&self) -> &[f32] {
        match &self.lora {
            Some(l) => &l.data,
            None => &self.params.data,
        }
    }

    fn checkpoint(&mut self, ev: &mut Events) -> anyhow::Result<()> {
        ev.emit(&Event::Phase {
            phase: "saving".into(),
        });
        self.st.order = self.order.state().clone();
        self.st.dropout_rng = self.rng.state();
        self.st.adam_t = self.adam.t;
        let ckpts = self.cfg.out.join("checkpoints");
        let layout = self.trainable_layout();
        let dir = state::save(
            &ckpts,
            &layout,
            self.trainable(),
            &self.adam,
            &self.st,
            &self.save,
        )?;
        formats::checkpoint::prune(&ckpts, self.cfg.keep_checkpoints, &dir)
            .map_err(|e| state::ckpt_err(format!("pruning old checkpoints: {e}")))?;
        self.last_ckpt_step = Some(self.st.step);
        ev.emit(&Event::Checkpoint {
            path: dir.display().to_string(),
            step: self.st.step,
            loss: self.st.last_loss.unwrap_or(f64::NAN),
        });
        ev.emit(&Event::Phase {
            phase: "training".into(),
        });
        Ok(())
    }

    /// Writes the model (HF folder) or adapter (PEFT folder) to `dir`, atomically.
    fn save_model(&self, dir: &Path) -> anyhow::Result<()> {
        let base = self.cfg.model.as_ref().map(|p| p.display().to_string());
        formats::checkpoint::replace_dir_atomically(dir, |tmp| match &self.lora {
            Some(l) => {
                formats::peft::save_adapter(tmp, l, base.as_deref())
                    .and_then(|()| formats::hf::save_tokenizer_files(tmp, &self.save))?;
                match &self.st.base_sha256 {
                    Some(sha) => {
                        crate::base_record::write_sidecar(tmp, self.cfg.model.as_deref(), sha)
                    }
                    None => Ok(()),
                }
            }
            None => formats::hf::save_model(tmp, &self.params, &self.save),
        })
        .with_context(|| format!("saving {}", dir.display()))
    }

    fn evaluate(&mut self) -> anyhow::Result<Option<f64>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let (b, t) = (self.cfg.batch_size, self.cfg.seq_len);
        let mut batch = Batch::new(b, t);
        let mut total = LossSum::default();
        let mut start = 0;
        while start < self.val_windows {
            let end = (start + b).min(self.val_windows);
            batch.windows.clear();
            batch.windows.extend(start..end);
            batch.fill(val, t);
            let l = forward_loss(
                base(&self.params, &self.quant),
                self.lora.as_ref(),
                &mut self.ws,
                &batch.inputs,
                &batch.targets,
            )?;
            total.add(l);
            start = end;
        }
        Ok(Some(total.mean()))
    }

    fn train(&mut self, ev: &mut Events) -> anyhow::Result<Outcome> {
        let (b, t, accum) = (self.cfg.batch_size, self.cfg.seq_len, self.cfg.accum);
        let total_micro = self.cfg.steps * accum as u64;
        let tokens_per_micro = (b * t) as f64;
        let mut batch = Batch::new(b, t);
        let started = Instant::now();
        let elapsed_before = self.st.elapsed_s;
        let mut bad_in_row = 0u64;
        ev.set_total(self.cfg.steps, self.st.step);
        ev.emit(&Event::Phase {
            phase: "training".into(),
        });
        let best_dir = self.cfg.out.join("best");
        let mut stopped_early = false;
        if self.st.step == 0 {
            // The starting point, so a curve (and a fine-tune's gain) begins at step 0.
            if let Some(v) = self.evaluate()? {
                ev.emit(&Event::Val {
                    step: 0,
                    val_loss: v,
                    val_batches: self.val_windows.div_ceil(b) as u64,
                });
            }
        }
        while self.st.step < self.cfg.steps {
            let step_start = Instant::now();
            let lr = self.sched.lr_at(self.st.step);
            let snapshot = (self.order.state().clone(), self.rng.state());
            // `self.grads` is zero here: AdamW clears it as it steps, and a skipped step below.
            let mut sum = LossSum::default();
            for _ in 0..accum {
                if let Some(sig) = self.stop.received() {
                    // The partial step is dropped: data order and RNG go back to its start,
                    // so the checkpoint equals the state after the last whole step.
                    self.order = WindowOrder::restore(&snapshot.0, self.order.windows())?;
                    self.rng = Rng::from_state(snapshot.1);
                    return self.interrupted(ev, sig, started, elapsed_before);
                }
                let t0 = Instant::now();
                self.order.next_batch(b, &mut batch.windows);
                batch.fill(&self.train, t);
                let l = forward_backward(
                    base(&self.params, &self.quant),
                    self.lora.as_ref(),
                    &mut self.grads,
                    &mut self.ws,
                    &batch.inputs,
                    &batch.targets,
                    &mut self.rng,
                )?;
                sum.add(l);
                self.st.micro_steps += 1;
                self.st.tokens_seen += tokens_per_micro as u64;
                let secs = t0.elapsed().as_secs_f64();
                ev.emit(&Event::Step {
                    step: self.st.micro_steps,
                    total: total_micro,
                    loss: l.mean(),
                    lr,
                    ms: secs * 1e3,
                    tokens_per_s: tokens_per_micro / secs,
                    gflops: self.flops_per_token * tokens_per_micro / secs / 1e9,
                });
            }
            let loss = sum.mean();
            // One read of the gradient sum: the norm of its mean, and the factors the AdamW
            // pass applies on the fly (1/count, then the clip coefficient).
            let stats = grad_stats(&self.grads, sum.count, self.cfg.grad_clip);
            let norm = stats.norm;
            if !(loss.is_finite() && norm.is_finite()) {
                bad_in_row += 1;
                zero_grads(&mut self.grads);
                ev.emit(&Event::Info {
                    key: "skipped_step".into(),
                    value: serde_json::json!({"step": self.st.step + 1,
                        "loss": finite(loss), "grad_norm": finite(norm),
                        "reason": "non-finite loss or gradient; weights not updated"}),
                });
                ev.log(format!(
                    "step {}: non-finite loss/gradient (loss {loss}, grad norm {norm}); step skipped",
                    self.st.step + 1
                ));
                if bad_in_row >= self.cfg.max_bad_steps {
                    return Err(Coded::new(
                        "non_finite",
                        EXIT_NONFINITE,
                        format!(
                            "{bad_in_row} steps in a row had a non-finite loss or gradient \
                             (last at step {}); stopping. The last good checkpoint is kept; try \
                             a lower --lr or --grad-clip",
                            self.st.step + 1
                        ),
                    )
                    .into());
                }
            } else {
                bad_in_row = 0;
                let weights = match &mut self.lora {
                    Some(l) => &mut l.data[..],
                    None => &mut self.params.data[..],
                };
                self.adam
                    .step(weights, &mut self.grads, stats.scale, lr, &self.decay);
                self.st.last_loss = Some(loss);
                if self.st.best_loss.is_none_or(|b| loss < b) {
                    self.st.best_loss = Some(loss);
                }
            }
            self.st.step += 1;
            let step_ms = step_start.elapsed().as_secs_f64() * 1e3;
            ev.emit(&Event::Batch {
                batch: self.st.step,
                step: self.st.micro_steps,
                avg_loss: loss,
                best_loss: self.st.best_loss.unwrap_or(f64::NAN),
                train_ms: step_ms,
                mfu: self.mfu(step_ms),
                peak_rss_bytes: machine::peak_rss_bytes(),
            });
            let tps = self.cfg.tokens_per_step() as f64 / (step_ms / 1e3);
            ev.progress_detail(lr, tps);
            if self.st.step == 1 {
                let eta = (self.cfg.steps - 1) as f64 * step_ms / 1e3;
                ev.log(format!(
                    "first step: {step_ms:.0} ms, {tps:.0} tokens/s, {:.2} GFLOP/s; ETA {eta:.0} s",
                    self.flops_per_token * tps / 1e9
                ));
            }
            let last = self.st.step == self.cfg.steps;
            let val_due = self.cfg.val_every > 0 && self.st.step.is_multiple_of(self.cfg.val_every);
            if val_due || last {
                if let Some(v) = self.evaluate()? {
                    ev.emit(&Event::Val {
                        step: self.st.step,
                        val_loss: v,
                        val_batches: self.val_windows.div_ceil(b) as u64,
                    });
                    if v.is_finite() && self.st.best_val.is_none_or(|best| v < best) {
                        self.st.best_val = Some(v);
                        self.st.best_val_step = Some(self.st.step);
                        self.st.bad_evals = 0;
                        self.save_model(&best_dir)?;
                    } else {
                        self.st.bad_evals += 1;
                        let p = self.cfg.early_stop_patience;
                        if p > 0 && self.st.bad_evals >= p && !last {
                            ev.emit(&Event::Info {
                                key: "early_stop".into(),
                                value: serde_json::json!({"step": self.st.step,
                                    "best_val_loss": self.st.best_val,
                                    "evaluations_without_improvement": self.st.bad_evals}),
                            });
                            ev.log(format!(
                                "early stop at step {}: {} evaluations without a better val loss",
                                self.st.step, self.st.bad_evals
                            ));
                            stopped_early = true;
                        }
                    }
                }
            }
            self.st.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            let ckpt_due =
                self.cfg.ckpt_every > 0 && self.st.step.is_multiple_of(self.cfg.ckpt_every);
            // No periodic checkpoint in the middle of a run of skipped (non-finite) steps:
            // the last good one stays the newest.
            if (ckpt_due && bad_in_row == 0) || last || stopped_early {
                self.checkpoint(ev)?;
            }
            if stopped_early {
                break;
            }
        }
        if self.last_ckpt_step != Some(self.st.step) {
            self.checkpoint(ev)?;
        }
        ev.emit(&Event::Phase {
            phase: "saving".into(),
        });
        let final_dir = self.cfg.out.join(if self.lora.is_some() {
            "adapter"
        } else {
            "model"
        });
        self.save_model(&final_dir)?;
        ev.finish();
        ev.log(format!("saved {}", final_dir.display()));
        let final_loss = self.st.last_loss.unwrap_or(f64::NAN);
        ev.emit(&Event::Done {
            total_steps: self.st.step,
            final_loss,
            total_time_s: elapsed_before + started.elapsed().as_secs_f64(),
            interrupted: false,
        });
        Ok(Outcome::Finished {
            run_dir: self.cfg.out.clone(),
            final_loss,
        })
    }

    /// Model FLOPs utilisation of an optimizer step that took `step_ms`: the step's model
    /// FLOPs per second over the measured GEMM peak (`None` when either is not measurable).
    fn mfu(&self, step_ms: f64) -> Option<f64> {
        let flops = self.flops_per_token * self.cfg.tokens_per_step() as f64;
        let mfu = flops / (step_ms / 1e3) / self.peak_flops;
        (mfu.is_finite() && mfu > 0.0).then_some(mfu)
    }

    fn interrupted(
        &mut self,
        ev: &mut Events,
        sig: i32,
        started: Instant,
        elapsed_before: f64,
    ) -> anyhow::Result<Outcome> {
        ev.finish();
        ev.log(format!(
            "signal {sig}: saving a checkpoint at step {} (a second signal quits at once)",
            self.st.step
        ));
        self.st.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        self.checkpoint(ev)?;
        ev.emit(&Event::Done {
            total_steps: self.st.step,
            final_loss: self.st.last_loss.unwrap_or(f64::NAN),
            total_time_s: self.st.elapsed_s,
            interrupted: true,
        });
        self.summary(
            ev,
            &Outcome::Interrupted {
                run_dir: self.cfg.out.clone(),
                exit_code: 0,
            },
        );
        Ok(Outcome::Interrupted {
            run_dir: self.cfg.out.clone(),
            exit_code: StopSignal::exit_code(sig),
        })
    }
}
