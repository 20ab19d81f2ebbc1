//! The LLaMA model: forward pass, loss, and backward pass over buffers laid out once in a
//! `Workspace` (llm.c style).
//!
//! Per layer: x -> RMSNorm -> q,k,v (+bias, +LoRA) -> RoPE -> causal GQA -> o_proj -> +x
//! -> RMSNorm -> gate,up -> SwiGLU -> down -> +residual; then the final RMSNorm and the fused
//! chunked classifier + cross-entropy.

use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::frozen::{Base, Frozen};
use crate::gemm::sgemm;
use crate::kernels::attention::{self, Shape};
use crate::kernels::classifier::{Classifier, ClassifierGrads, ClassifierWeights};
use crate::kernels::rope::{self, RopeTable};
use crate::kernels::{embedding, linear, rmsnorm, swiglu};
use crate::lora::{LoraConfig, LoraParams, LoraTarget};
use crate::params::{names, Params};
use crate::rng::Rng;
use std::ops::Range;

pub use crate::kernels::classifier::IGNORE_INDEX;

/// A sum of per-token losses and how many tokens it covers (mean = sum / count).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
    pub sum: f64,
    pub count: usize,
}

impl LossSum {
    /// Mean loss (NaN when no token counted).
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
    pub fn add(&mut self, other: LossSum) {
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Rows of the classifier processed at once: as many as fit a 64 MiB logits buffer, from 64
/// to 512. Longer chunks run the classifier's GEMMs faster (stories110m, 4x256 tokens: a
/// 1.5% faster step at 512 rows than at 256); past 512 rows nothing more was gained.
fn classifier_chunk(vocab: usize, rows: usize) -> usize {
    const LOGIT_FLOATS: usize = 16 << 20;
    let chunk = (LOGIT_FLOATS / vocab.max(1)).clamp(64, 512) / 64 * 64;
    rows.min(chunk)
}

/// Byte counts of a workspace, for memory reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkspaceBytes {
    /// Activations saved for the backward pass.
    pub saved: usize,
    /// Scratch buffers of the backward pass and the classifier chunk.
    pub scratch: usize,
}

/// All activation and scratch buffers of one (batch, seq) shape.
pub struct Workspace {
    cfg: ModelConfig,
    lora: Option<LoraConfig>,
    batch: usize,
    seq: usize,
    n: usize,
    rope: RopeTable,
    // Saved activations, one slab per layer ([L, n, width]).
    res: Vec<f32>, // [L+1, n, d]: input of each layer, then the final residual
    rstd1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    lse: Vec<f32>,
    xmid: Vec<f32>,
    rstd2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    lnf: Vec<f32>,
    rstdf: Vec<f32>,
    // LoRA: x A^T per (layer, target) [L, nt, n, r]; dropout masks [L, nt, n, in_max].
    lora_mid: Vec<f32>,
    lora_mask: Vec<f32>,
    // Scratch. `ln` and `h` hold a normalised input / SwiGLU output of the layer at hand:
    // the backward pass recomputes them from the saved rstd / gate and up (cheap, and it
    // saves (2 d + hidden) floats per token per layer).
    ln: Vec<f32>,
    h: Vec<f32>,
    dres: Vec<f32>,
    dln: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dh: Vec<f32>,
    dg: Vec<f32>,
    du: Vec<f32>,
    dmid: Vec<f32>,
    // dB^T of the adapter at hand, [r, out_max] (see `lora_backward`).
    dbt: Vec<f32>,
    ltmp: Vec<f32>,
    logits: Vec<f32>,
    // A tile of a quantized frozen matrix, dequantized (grown on first use, at most
    // `frozen::TILE_FLOATS`; empty for f32 weights).
    wtile: Vec<f32>,
}

fn mul(a: usize, b: usize) -> Result<usize, EngineError> {
    a.checked_mul(b)
        .ok_or(EngineError::Overflow("workspace size"))
}

impl Workspace {
    pub fn new(
        cfg: &ModelConfig,
        batch: usize,
        seq: usize,
        lora: Option<&LoraConfig>,
    ) -> Result<Workspace, EngineError> {
        cfg.validate()?;
        for (field, value) in [("batch size", batch), ("sequence length", seq)] {
            if value == 0 || value > 1 << 24 {
                return Err(EngineError::Invalid {
                    field,
                    value: value.to_string(),
                    rule: "between 1 and 2^24",
                });
            }
        }
        let lora = match lora {
            Some(l) => {
                l.validate(cfg)?;
                Some(l.normalized())
            }
            None => None,
        };
        let n = mul(batch, seq)?;
        let (d, kv, hd, layers) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim, cfg.n_layers);
        let (nt, rank, dropout) = lora.as_ref().map_or((0, 0, false), |l| {
            (l.targets.len(), l.rank, l.dropout > 0.0)
        });
        let in_max = lora.as_ref().map_or(0, |l| {
            l.targets.iter().map(|t| t.dims(cfg).0).max().unwrap_or(0)
        });
        let out_max = lora.as_ref().map_or(0, |l| {
            l.targets.iter().map(|t| t.dims(cfg).1).max().unwrap_or(0)
        });
        let chunk = classifier_chunk(cfg.vocab_size, n);
        // Check the total before allocating anything.
        let per_layer = mul(n, 4 * d + 2 * kv + 2 * hd + 2)? + mul(mul(batch, cfg.n_heads)?, seq)?;
        let lora_floats = mul(
            mul(layers, nt)?,
            mul(n, rank + if dropout { in_max } else { 0 })?,
        )?;
        let total = mul(per_layer, layers)?
            + mul(n, 2 * d + 1)?
            + lora_floats
            + mul(
                n,
                4 * d + 2 * kv + 4 * hd + rank + if dropout { in_max } else { 0 },
            )?
            + mul(rank, out_max)?
            + mul(chunk, cfg.vocab_size)?;
        ModelConfig::check_fits_in_memory(mul(total, 4)? as u64)?;
        let z = |len: usize| vec![0.0f32; len];
        Ok(Workspace {
            cfg: cfg.clone(),
            batch,
            seq,
            n,
            rope: RopeTable::new(seq, cfg.head_dim(), cfg.rope_theta),
            res: z((layers + 1) * n * d),
            ln: z(n * d),
            rstd1: z(layers * n),
            q: z(layers * n * d),
            k: z(layers * n * kv),
            v: z(layers * n * kv),
            att: z(layers * n * d),
            lse: z(layers * n * cfg.n_heads),
            xmid: z(layers * n * d),
            rstd2: z(layers * n),
            g: z(layers * n * hd),
            u: z(layers * n * hd),
            h: z(n * hd),
            lnf: z(n * d),
            rstdf: z(n),
            lora_mid: z(layers * nt * n * rank),
            lora_mask: z(if dropout { layers * nt * n * in_max } else { 0 }),
            dres: z(n * d),
            dln: z(n * d),
            dq: z(n * d),
            dk: z(n * kv),
            dv: z(n * kv),
            dh: z(n * hd),
            dg: z(n * hd),
            du: z(n * hd),
            dmid: z(n * rank),
            dbt: z(rank * out_max),
            ltmp: z(if dropout { n * in_max } else { 0 }),
            logits: z(chunk * cfg.vocab_size),
            wtile: Vec::new(),
            lora,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Saved activations vs scratch, in bytes.
    pub fn breakdown(&self) -> WorkspaceBytes {
        let saved = [
            &self.res,
            &self.rstd1,
            &self.q,
            &self.k,
            &self.v,
            &self.att,
            &self.lse,
            &self.xmid,
            &self.rstd2,
            &self.g,
            &self.u,
            &self.lnf,
            &self.rstdf,
            &self.lora_mid,
            &self.lora_mask,
        ];
        let scratch = [
            &self.ln,
            &self.h,
            &self.dres,
            &self.dln,
            &self.dq,
            &self.dk,
            &self.dv,
            &self.dh,
            &self.dg,
            &self.du,
            &self.dmid,
            &self.dbt,
            &self.ltmp,
            &self.logits,
            &self.wtile,
        ];
        let bytes = |v: &[&Vec<f32>]| v.iter().map(|b| b.len() * 4).sum::<usize>();
        WorkspaceBytes {
            saved: bytes(&saved),
            scratch: bytes(&scratch) + (self.rope.cos.len() + self.rope.sin.len()) * 4,
        }
    }

    /// Total bytes of every buffer.
    pub fn bytes(&self) -> usize {
        let b = self.breakdown();
        b.saved + b.scratch
    }

    fn check(
        &self,
        base: Base<'_>,
        lora: Option<&LoraParams>,
        inputs: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<(), EngineError> {
        if *base.config() != self.cfg {
            return Err(EngineError::Invalid {
                field: "params",
                value: "another model shape".into(),
                rule: "the shape the workspace was made for",
            });
        }
        if let Some(params) = base.params() {
            if params.data.len() != params.layout.total {
                return Err(EngineError::Length {
                    what: "params",
                    expected: params.layout.total,
                    got: params.data.len(),
                });
            }
        }
        match (lora, &self.lora) {
            (None, _) => {}
            (Some(lp), Some(lc))
                if lp.config.rank == lc.rank
                    && lp.config.targets == lc.targets
                    && lp.data.len() == lp.layout.total => {}
            (Some(_), _) => {
                return Err(EngineError::Invalid {
                    field: "LoRA adapter",
                    value: "a different rank or target set".into(),
                    rule: "the LoRA config the workspace was made for",
                })
            }
        }
        if inputs.len() != self.n {
            return Err(EngineError::Length {
                what: "input tokens (batch * seq)",
                expected: self.n,
                got: inputs.len(),
            });
        }
        let vocab = self.cfg.vocab_size;
        if let Some((pos, &id)) = inputs
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(EngineError::TokenOutOfRange { id, pos, vocab });
        }
        if let Some(targets) = targets {
            if targets.len() != self.n {
                return Err(EngineError::Length {
                    what: "target tokens (batch * seq)",
                    expected: self.n,
                    got: targets.len(),
                });
            }
            if let Some((pos, &id)) = targets
                .iter()
                .enumerate()
                .find(|(_, &t)| t != IGNORE_INDEX && t as usize >= vocab)
            {
                return Err(EngineError::TokenOutOfRange { id, pos, vocab });
            }
        }
        Ok(())
    }

    fn attn_shape(&self) -> Shape {
        Shape {
            batch: self.batch,
            seq: self.seq,
            n_heads: self.cfg.n_heads,
            n_kv_heads: self.cfg.n_kv_heads,
            head_dim: self.cfg.head_dim(),
        }
    }
}

/// Slab `l` of width `w` (n rows) in a per-layer buffer.
fn slab(n: usize, w: usize, l: usize) -> Range<usize> {
    l * n * w..(l + 1) * n * w
}

/// A LoRA adapter on one projection during one pass.
struct LoraSlot<'a> {
    a: &'a [f32],
    b: &'a [f32],
    rank: usize,
    scale: f32,
    /// [n, r]: x A^T, saved for the backward pass.
    mid: &'a mut [f32],
    /// [n, in]: dropout mask scaled by 1/(1-p), when dropout is on.
    mask: Option<&'a mut [f32]>,
}

fn masked<'t>(x: &'t [f32], mask: Option<&[f32]>, tmp: &'t mut [f32]) -> &'t [f32] {
    match mask {
        Some(m) => {
            for ((t, x), m) in tmp.iter_mut().zip(x).zip(m) {
                *t = x * m;
            }
            &tmp[..x.len()]
        }
        None => x,
    }
}

/// y += scale * dropout(x) A^T B^T; saves x A^T.
fn lora_forward(
    y: &mut [f32],
    x: &[f32],
    slot: &mut LoraSlot<'_>,
    tmp: &mut [f32],
    n: usize,
    din: usize,
    dout: usize,
) {
    let r = slot.rank;
    let xin = masked(x, slot.mask.as_deref(), tmp);
    sgemm(
        false, true, n, r, din, 1.0, xin, din, slot.a, din, 0.0, slot.mid, r,
    );
    sgemm(
        false, true, n, dout, r, slot.scale, slot.mid, r, slot.b, r, 1.0, y, dout,
    );
}

/// Gradients of the adapter (dA, dB +=) and its input path (dx +=) from dy.
#[allow(clippy::too_many_arguments)]
fn lora_backward(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    slot: &LoraSlot<'_>,
    da: &mut [f32],
    db: &mut [f32],
    dmid: &mut [f32],
    dbt: &mut [f32],
    tmp: &mut [f32],
    n: usize,
    din: usize,
    dout: usize,
) {
    let r = slot.rank;
    // dB^T = scale mid^T dy, then added to dB transposed: the [out, r] product directly is a
    // tall, narrow GEMM that runs 3x slower (576 x 8 x 1024: 67 vs 205 GFLOP/s).
    let dbt = &mut dbt[..r * dout];
    sgemm(
        true, false, r, dout, n, slot.scale, slot.mid, r, dy, dout, 0.0, dbt, dout,
    );
    for (o, row) in db.chunks_exact_mut(r).enumerate() {
        for (i, g) in row.iter_mut().enumerate() {
            *g += dbt[i * dout + o];
        }
    }
    sgemm(
        false, false, n, r, dout, slot.scale, dy, dout, slot.b, r, 0.0, dmid, r,
    );
    match slot.mask.as_deref() {
        Some(mask) => {
            let xin = masked(x, Some(mask), tmp);
            sgemm(true, false, r, din, n, 1.0, dmid, r, xin, din, 1.0, da, din);
            let t = &mut tmp[..n * din];
            sgemm(
                false, false, n, din, r, 1.0, dmid, r, slot.a, din, 0.0, t, din,
            );
            for ((dx, t), m) in dx.iter_mut().zip(t.iter()).zip(mask) {
                *dx += t * m;
            }
        }
        None => {
            sgemm(true, false, r, din, n, 1.0, dmid, r, x, din, 1.0, da, din);
            sgemm(
                false, false, n, din, r, 1.0, dmid, r, slot.a, din, 1.0, dx, din,
            );
        }
    }
}

/// Builds the LoRA slot of (layer, target), if that projection is adapted.
fn slot<'a>(
    lora: Option<&'a LoraParams>,
    cfg: &ModelConfig,
    mid: &'a mut [f32],
    mask: &'a mut [f32],
    n: usize,
    l: usize,
    t: LoraTarget,
) -> Option<LoraSlot<'a>> {
    let lp = lora?;
    let ti = lp.config.index_of(t)?;
    let (a, b) = lp.ab(l, t)?;
    let nt = lp.config.targets.len();
    let r = lp.config.rank;
    let k = l * nt + ti;
    let mid = &mut mid[k * n * r..(k + 1) * n * r];
    let in_max = if mask.is_empty() {
        0
    } else {
        mask.len() / (cfg.n_layers * nt * n)
    };
    let din = t.dims(cfg).0;
    let mask = if mask.is_empty() {
        None
    } else {
        Some(&mut mask[k * n * in_max..k * n * in_max + n * din])
    };
    Some(LoraSlot {
        a,
        b,
        rank: r,
        scale: lp.config.scale(),
        mid,
        mask,
    })
}

/// The LoRA dropout masks a forward pass applies: none when evaluating or without dropout.
fn active_masks(masks: &mut [f32], use_masks: bool) -> &mut [f32] {
    if use_masks {
        masks
    } else {
        &mut []
    }
}

/// Runs the layers and the final norm; leaves everything the backward pass needs in `ws`.
/// With `dropout_rng`, LoRA dropout masks are drawn (training).
fn forward_body(
    base: Base<'_>,
    lora: Option<&LoraParams>,
    ws: &mut Workspace,
    inputs: &[u32],
    mut dropout_rng: Option<&mut Rng>,
) {
    let cfg = ws.cfg.clone();
    let (n, d, kv, hd) = (ws.n, cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
    let eps = cfg.norm_eps as f32;
    let shape = ws.attn_shape();
    let dropout = lora.map_or(0.0, |l| l.config.dropout);
    // Dropout masks apply only in training passes; evaluation runs the adapter as is.
    let use_masks = dropout_rng.is_some() && dropout > 0.0;
    // A LoRA run's base is frozen: its f32 matrices run over the tiles a quantized base uses.
    let tiled = lora.is_some();
    base.embedding(tiled)
        .gather_rows(&mut ws.res[..n * d], inputs);
    for l in 0..cfg.n_layers {
        let w = base.layer(l, tiled);
        let (before, after) = ws.res.split_at_mut((l + 1) * n * d);
        let x_in = &before[l * n * d..];
        let x_out = &mut after[..n * d];
        let ln1 = &mut ws.ln[..];
        rmsnorm::forward(ln1, &mut ws.rstd1[slab(n, 1, l)], x_in, w.attn_norm, eps);
        let ln1 = &ws.ln[..];
        if let (Some(rng), true) = (dropout_rng.as_deref_mut(), dropout > 0.0) {
            draw_masks(&mut ws.lora_mask, lora, &cfg, n, l, dropout, rng);
        }
        #[allow(clippy::type_complexity)]
        let projections: [(LoraTarget, &mut [f32], Frozen, Option<&[f32]>, usize); 3] = [
            (LoraTarget::Q, &mut ws.q[slab(n, d, l)], w.wq, w.bq, d),
            (LoraTarget::K, &mut ws.k[slab(n, kv, l)], w.wk, w.bk, kv),
            (LoraTarget::V, &mut ws.v[slab(n, kv, l)], w.wv, w.bv, kv),
        ];
        for (t, y, wt, bias, dout) in projections {
            wt.xwt(y, ln1, n, 0.0, &mut ws.wtile);
            if let Some(b) = bias {
                linear::add_bias(y, b, dout);
            }
            if let Some(mut s) = slot(
                lora,
                &cfg,
                &mut ws.lora_mid,
                active_masks(&mut ws.lora_mask, use_masks),
                n,
                l,
                t,
            ) {
                lora_forward(y, ln1, &mut s, &mut ws.ltmp, n, d, dout);
            }
        }
        rope::apply(
            &mut ws.q[slab(n, d, l)],
            &ws.rope,
            ws.seq,
            cfg.n_heads,
            false,
        );
        rope::apply(
            &mut ws.k[slab(n, kv, l)],
            &ws.rope,
            ws.seq,
            cfg.n_kv_heads,
            false,
        );
        attention::forward(
            &mut ws.att[slab(n, d, l)],
            &mut ws.lse[slab(n, cfg.n_heads, l)],
            &ws.q[slab(n, d, l)],
            &ws.k[slab(n, kv, l)],
            &ws.v[slab(n, kv, l)],
            shape,
        );
        let att = &ws.att[slab(n, d, l)];
        let xmid = &mut ws.xmid[slab(n, d, l)];
        xmid.copy_from_slice(x_in);
        w.wo.xwt(xmid, att, n, 1.0, &mut ws.wtile);
        if let Some(mut s) = slot(
            lora,
            &cfg,
            &mut ws.lora_mid,
            active_masks(&mut ws.lora_mask, use_masks),
            n,
            l,
            LoraTarget::O,
        ) {
            lora_forward(xmid, att, &mut s, &mut ws.ltmp, n, d, d);
        }
        let xmid = &ws.xmid[slab(n, d, l)];
        rmsnorm::forward(
            &mut ws.ln[..],
            &mut ws.rstd2[slab(n, 1, l)],
            xmid,
            w.ffn_norm,
            eps,
        );
        let ln2 = &ws.ln[..];
        for (t, y, wt) in [
            (LoraTarget::Gate, &mut ws.g[slab(n, hd, l)], w.w_gate),
            (LoraTarget::Up, &mut ws.u[slab(n, hd, l)], w.w_up),
        ] {
            wt.xwt(y, ln2, n, 0.0, &mut ws.wtile);
            if let Some(mut s) = slot(
                lora,
                &cfg,
                &mut ws.lora_mid,
                active_masks(&mut ws.lora_mask, use_masks),
                n,
                l,
                t,
            ) {
                lora_forward(y, ln2, &mut s, &mut ws.ltmp, n, d, hd);
            }
        }
        swiglu::forward(&mut ws.h[..], &ws.g[slab(n, hd, l)], &ws.u[slab(n, hd, l)]);
        let hbuf = &ws.h[..];
        x_out.copy_from_slice(xmid);
        w.w_down.xwt(x_out, hbuf, n, 1.0, &mut ws.wtile);
        if let Some(mut s) = slot(
            lora,
            &cfg,
            &mut ws.lora_mid,
            active_masks(&mut ws.lora_mask, use_masks),
            n,
            l,
            LoraTarget::Down,
        ) {
            lora_forward(x_out, hbuf, &mut s, &mut ws.ltmp, n, hd, d);
        }
    }
    let last = &ws.res[slab(n, d, cfg.n_layers)];
    rmsnorm::forward(&mut ws.lnf, &mut ws.rstdf, last, base.final_norm(), eps);
}

/// Draws this layer's LoRA dropout masks (values 0 or 1/(1-p)), in target order.
fn draw_masks(
    masks: &mut [f32],
    lora: Option<&LoraParams>,
    cfg: &ModelConfig,
    n: usize,
    l: usize,
    p: f32,
    rng: &mut Rng,
) {
    let Some(lp) = lora else { return };
    let nt = lp.config.targets.len();
    let in_max = masks.len() / (cfg.n_layers * nt * n);
    let keep = 1.0 / (1.0 - p);
    for (ti, t) in lp.config.targets.iter().enumerate() {
        let k = l * nt + ti;
        let din = t.dims(cfg).0;
        for m in &mut masks[k * n * in_max..k * n * in_max + n * din] {
            *m = if rng.uniform() < p as f64 { 0.0 } else { keep };
        }
    }
}

/// Mean-able loss of the model on `targets` (IGNORE_INDEX positions skipped); no gradients.
///
/// `base` is f32 `Params` or, with a LoRA adapter, a quantized model (`&QuantModel`).
pub fn forward_loss<'b>(
    base: impl Into<Base<'b>>,
    lora: Option<&LoraParams>,
    ws: &mut Workspace,
    inputs: &[u32],
    targets: &[u32],
) -> Result<LossSum, EngineError> {
    let base = base.into();
    ws.check(base, lora, inputs, Some(targets))?;
    forward_body(base, lora, ws, inputs, None);
    let mut c = Classifier {
        vocab: ws.cfg.vocab_size,
        dim: ws.cfg.dim,
        chunk: classifier_chunk(ws.cfg.vocab_size, ws.n),
        logits: &mut ws.logits,
    };
    let w = ClassifierWeights::Frozen(base.classifier(lora.is_some()), &mut ws.wtile);
    let (sum, count) = c.run_with(&ws.lnf, w, targets, None);
    Ok(LossSum { sum, count })
}

/// Logits `[B, T, V]` (for tests and small-model evaluation; allocates B*T*V floats).
pub fn logits<'b>(
    base: impl Into<Base<'b>>,
    lora: Option<&LoraParams>,
    tokens: &[u32],
    batch: usize,
    seq: usize,
) -> Result<Vec<f32>, EngineError> {
    let base = base.into();
    let mut ws = Workspace::new(base.config(), batch, seq, lora.map(|l| &l.config))?;
    ws.check(base, lora, tokens, None)?;
    forward_body(base, lora, &mut ws, tokens, None);
    let (n, v) = (ws.n, ws.cfg.vocab_size);
    let mut out = vec![0.0f32; mul(n, v)?];
    base.classifier(lora.is_some())
        .xwt(&mut out, &ws.lnf, n, 0.0, &mut ws.wtile);
    Ok(out)
}

/// Where gradients go: every tensor of the model, or only the adapter.
enum GradTarget {
    Full,
    Lora,
}

/// Offsets of a model tensor in the Params layout.
fn range_of(params: &Params, name: &str) -> Range<usize> {
    // The layout is built from the config, so every name the model asks for exists.
    params.layout.find(name).map(|t| t.range()).unwrap_or(0..0)
}

/// Forward and backward pass: ACCUMULATES (+=) into `grads` the gradient of the SUM of the
/// per-token losses. `grads` has the layout of `params` (full training) or of `lora` (when
/// `lora` is Some: the base model is frozen). Returns the loss sum and count; the caller
/// scales the gradient by 1 / total count (over all micro-batches) before clipping.
///
/// `base` is f32 `Params` or, with a LoRA adapter, a quantized model (`&QuantModel`): the
/// frozen base gets no gradient, only the input gradients `dY W` pass through it.
pub fn forward_backward<'b>(
    base: impl Into<Base<'b>>,
    lora: Option<&LoraParams>,
    grads: &mut [f32],
    ws: &mut Workspace,
    inputs: &[u32],
    targets: &[u32],
    rng: &mut Rng,
) -> Result<LossSum, EngineError> {
    let base = base.into();
    ws.check(base, lora, inputs, Some(targets))?;
    let mode = if lora.is_some() {
        GradTarget::Lora
    } else {
        GradTarget::Full
    };
    // Full training updates the base, so it needs the f32 parameters (`trained`).
    let trained = match (base.params(), &mode) {
        (Some(p), GradTarget::Full) => Some(p),
        (_, GradTarget::Lora) => None,
        (None, GradTarget::Full) => {
            return Err(EngineError::Invalid {
                field: "base model",
                value: "quantized weights".into(),
                rule: "f32 weights for full training (a quantized base trains a LoRA adapter)",
            })
        }
    };
    let expected = match (lora, trained) {
        (Some(l), _) => l.layout.total,
        (None, Some(p)) => p.layout.total,
        (None, None) => 0,
    };
    if grads.len() != expected {
        return Err(EngineError::Length {
            what: "gradient buffer",
            expected,
            got: grads.len(),
        });
    }
    forward_body(base, lora, ws, inputs, Some(rng));
    let cfg = ws.cfg.clone();
    let (n, d, kv, hd) = (ws.n, cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
    let full = trained.is_some();
    let shape = ws.attn_shape();
    // Offsets of a model tensor's gradient (full training only; empty otherwise).
    let range = |name: &str| trained.map_or(0..0, |p| range_of(p, name));

    // Classifier + loss: dlnf lands in ws.dln.
    let (sum, count) = {
        let mut c = Classifier {
            vocab: cfg.vocab_size,
            dim: d,
            chunk: classifier_chunk(cfg.vocab_size, n),
            logits: &mut ws.logits,
        };
        let dx = &mut ws.dln;
        match trained {
            Some(p) => {
                let classifier_range = if cfg.tied_embeddings {
                    range(names::EMBED)
                } else {
                    range(names::LM_HEAD)
                };
                c.run(
                    &ws.lnf,
                    p.classifier(),
                    targets,
                    Some(ClassifierGrads {
                        dx,
                        dw: Some(&mut grads[classifier_range]),
                    }),
                )
            }
            None => c.run_with(
                &ws.lnf,
                ClassifierWeights::Frozen(base.classifier(true), &mut ws.wtile),
                targets,
                Some(ClassifierGrads { dx, dw: None }),
            ),
        }
    };
    ws.dres.fill(0.0);
    let final_norm_grad = full.then(|| &mut grads[range(names::FINAL_NORM)]);
    rmsnorm::backward(
        &mut ws.dres,
        final_norm_grad,
        &ws.dln,
        &ws.res[slab(n, d, cfg.n_layers)],
        base.final_norm(),
        &ws.rstdf,
    );

    for l in (0..cfg.n_layers).rev() {
        let w = base.layer(l, !full);
        let lr = |s: &str| range(&names::layer(l, s));
        // LoRA gradient ranges of (layer, target): (A, B).
        let lora_ranges = |t: LoraTarget| -> Option<(Range<usize>, Range<usize>)> {
            let lp = lora?;
            let i = lp.tensor_index(l, t)?;
            Some((
                lp.layout.tensors[i].range(),
                lp.layout.tensors[i + 1].range(),
            ))
        };
        // Runs the adapter backward of target t if it is adapted.
        macro_rules! lora_back {
            ($t:expr, $dx:expr, $dy:expr, $x:expr, $din:expr, $dout:expr) => {
                if let (Some(s), Some((ra, rb))) = (
                    slot(lora, &cfg, &mut ws.lora_mid, &mut ws.lora_mask, n, l, $t),
                    lora_ranges($t),
                ) {
                    let (ga, gb) = split_two(grads, ra, rb);
                    lora_backward(
                        $dx,
                        $dy,
                        $x,
                        &s,
                        ga,
                        gb,
                        &mut ws.dmid,
                        &mut ws.dbt,
                        &mut ws.ltmp,
                        n,
                        $din,
                        $dout,
                    );
                }
            };
        }

        // MLP: res[l+1] = xmid + h Wd^T (+ LoRA)
        swiglu::forward(&mut ws.h, &ws.g[slab(n, hd, l)], &ws.u[slab(n, hd, l)]);
        let hbuf = &ws.h[..];
        w.w_down.dyw(&mut ws.dh, &ws.dres, n, false, &mut ws.wtile);
        if full {
            linear::backward_weight(
                &mut grads[lr(names::W_DOWN)],
                None,
                &ws.dres,
                hbuf,
                n,
                hd,
                d,
            );
        }
        lora_back!(LoraTarget::Down, &mut ws.dh, &ws.dres, hbuf, hd, d);
        swiglu::backward(
            &mut ws.dg,
            &mut ws.du,
            &ws.dh,
            &ws.g[slab(n, hd, l)],
            &ws.u[slab(n, hd, l)],
        );
        let xmid = &ws.xmid[slab(n, d, l)];
        rmsnorm::apply(&mut ws.ln, xmid, w.ffn_norm, &ws.rstd2[slab(n, 1, l)]);
        let ln2 = &ws.ln[..];
        w.w_gate.dyw(&mut ws.dln, &ws.dg, n, false, &mut ws.wtile);
        w.w_up.dyw(&mut ws.dln, &ws.du, n, true, &mut ws.wtile);
        if full {
            linear::backward_weight(&mut grads[lr(names::W_GATE)], None, &ws.dg, ln2, n, d, hd);
            linear::backward_weight(&mut grads[lr(names::W_UP)], None, &ws.du, ln2, n, d, hd);
        }
        lora_back!(LoraTarget::Gate, &mut ws.dln, &ws.dg, ln2, d, hd);
        lora_back!(LoraTarget::Up, &mut ws.dln, &ws.du, ln2, d, hd);
        let xmid = &ws.xmid[slab(n, d, l)];
        let gw = full.then(|| &mut grads[lr(names::FFN_NORM)]);
        rmsnorm::backward(
            &mut ws.dres,
            gw,
            &ws.dln,
            xmid,
            w.ffn_norm,
            &ws.rstd2[slab(n, 1, l)],
        );

        // Attention: xmid = res[l] + att Wo^T (+ LoRA); ws.dln holds d(att).
        let att = &ws.att[slab(n, d, l)];
        w.wo.dyw(&mut ws.dln, &ws.dres, n, false, &mut ws.wtile);
        if full {
            linear::backward_weight(&mut grads[lr(names::WO)], None, &ws.dres, att, n, d, d);
        }
        lora_back!(LoraTarget::O, &mut ws.dln, &ws.dres, att, d, d);
        attention::backward(
            &mut ws.dq,
            &mut ws.dk,
            &mut ws.dv,
            &ws.dln,
            &ws.q[slab(n, d, l)],
            &ws.k[slab(n, kv, l)],
            &ws.v[slab(n, kv, l)],
            att,
            &ws.lse[slab(n, cfg.n_heads, l)],
            shape,
        );
        rope::apply(&mut ws.dq, &ws.rope, ws.seq, cfg.n_heads, true);
        rope::apply(&mut ws.dk, &ws.rope, ws.seq, cfg.n_kv_heads, true);
        rmsnorm::apply(
            &mut ws.ln,
            &ws.res[slab(n, d, l)],
            w.attn_norm,
            &ws.rstd1[slab(n, 1, l)],
        );
        let ln1 = &ws.ln[..];
        w.wq.dyw(&mut ws.dln, &ws.dq, n, false, &mut ws.wtile);
        w.wk.dyw(&mut ws.dln, &ws.dk, n, true, &mut ws.wtile);
        w.wv.dyw(&mut ws.dln, &ws.dv, n, true, &mut ws.wtile);
        if full {
            for (wn, bn, dy, dout) in [
                (names::WQ, names::BQ, &ws.dq, d),
                (names::WK, names::BK, &ws.dk, kv),
                (names::WV, names::BV, &ws.dv, kv),
            ] {
                let br = cfg.qkv_bias.then(|| lr(bn));
                let wr = lr(wn);
                match br {
                    Some(br) => {
                        let (gw, gb) = split_two(grads, wr, br);
                        linear::backward_weight(gw, Some(gb), dy, ln1, n, d, dout);
                    }
                    None => linear::backward_weight(&mut grads[wr], None, dy, ln1, n, d, dout),
                }
            }
        }
        lora_back!(LoraTarget::Q, &mut ws.dln, &ws.dq, ln1, d, d);
        lora_back!(LoraTarget::K, &mut ws.dln, &ws.dk, ln1, d, kv);
        lora_back!(LoraTarget::V, &mut ws.dln, &ws.dv, ln1, d, kv);
        let x_in = &ws.res[slab(n, d, l)];
        let gw = full.then(|| &mut grads[lr(names::ATTN_NORM)]);
        rmsnorm::backward(
            &mut ws.dres,
            gw,
            &ws.dln,
            x_in,
            w.attn_norm,
            &ws.rstd1[slab(n, 1, l)],
        );
    }
    if full {
        embedding::backward(&mut grads[range(names::EMBED)], &ws.dres, inputs, d);
    }
    Ok(LossSum { sum, count })
}

/// Two disjoint mutable ranges of one buffer.
fn split_two(buf: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&mut [f32], &mut [f32]) {
    if a.start < b.start {
        let (x, y) = buf.split_at_mut(b.start);
        (&mut x[a], &mut y[..b.end - b.start])
    } else {
        let (x, y) = buf.split_at_mut(a.start);
        let bb = &mut x[b];
        (&mut y[..a.end - a.start], bb)
    }
}
