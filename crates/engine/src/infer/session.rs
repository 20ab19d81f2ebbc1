//! An inference session: one model, one KV cache, positions advanced by a batched prefill of
//! the prompt (GEMM per projection) and then one token at a time (matrix-vector products).

use super::adapter::LayerAdapter;
use super::kernels::{self, MatVec};
use super::kv::{KvCache, KvType};
use super::weights::{LayerW, Mat, Weights};
use super::{decode_attention, prefill_attention};
use crate::kernels::rope::RopeTable;
use crate::lora::LoraTarget;
use crate::quant::{self, QuantizedActs};

/// Prompt tokens processed per GEMM batch: bounds the scratch memory of long prompts.
const PREFILL_CHUNK: usize = 512;

/// Context length from which decode splits attention across threads (below it the region
/// costs more than the work).
const PARALLEL_ATTENTION_FROM: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InferError {
    #[error("token id {token} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("the context is full: {capacity} positions (model or --max-tokens limit)")]
    ContextFull { capacity: usize },
    #[error("nothing to process: the token list is empty")]
    Empty,
    #[error("a context of {requested} positions is invalid: the model allows 1..={max}")]
    BadCapacity { requested: usize, max: usize },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Per-row scratch buffers, sized for `rows` tokens.
struct Scratch {
    rows: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Scratch {
    fn new(rows: usize, d: usize, kv: usize, h: usize) -> Scratch {
        Scratch {
            rows,
            x: vec![0.0; rows * d],
            xn: vec![0.0; rows * d],
            q: vec![0.0; rows * d],
            k: vec![0.0; rows * kv],
            v: vec![0.0; rows * kv],
            att: vec![0.0; rows * d],
            proj: vec![0.0; rows * d],
            gate: vec![0.0; rows * h],
            up: vec![0.0; rows * h],
        }
    }
}

/// Generation state for one sequence of one model.
pub struct InferenceSession<'p> {
    weights: Weights<'p>,
    cache: KvCache,
    rope: RopeTable,
    one: Scratch,
    batch: Option<Scratch>,
    logits: Vec<f32>,
    /// The current input vector/rows quantized for the integer kernels (quantized models).
    acts: QuantizedActs,
}

impl<'p> InferenceSession<'p> {
    /// A session with room for `capacity` positions (at most the model's `max_seq_len`) over
    /// f32 `Params` or a `QuantModel`.
    pub fn new(weights: impl Into<Weights<'p>>, capacity: usize) -> Result<Self, InferError> {
        Self::with_kv(weights, capacity, KvType::F32)
    }

    /// [`InferenceSession::new`] with the KV cache stored as `kv`.
    pub fn with_kv(
        weights: impl Into<Weights<'p>>,
        capacity: usize,
        kv: KvType,
    ) -> Result<Self, InferError> {
        let weights = weights.into();
        let cfg = weights.config();
        cfg.validate()?;
        if capacity == 0 || capacity > cfg.max_seq_len {
            return Err(InferError::BadCapacity {
                requested: capacity,
                max: cfg.max_seq_len,
            });
        }
        let kv_type = kv;
        let (d, kv, h) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
        let mut acts = QuantizedActs::default();
        if let Weights::Quant(m) = weights {
            acts.precision = m.act_precision;
        }
        Ok(InferenceSession {
            weights,
            acts,
            cache: KvCache::with_type(cfg.n_layers, kv, capacity, kv_type),
            rope: RopeTable::new(capacity, cfg.head_dim(), cfg.rope_theta),
            one: Scratch::new(1, d, kv, h),
            batch: None,
            logits: vec![0.0; cfg.vocab_size],
        })
    }

    /// The weights this session runs on.
    pub fn weights(&self) -> Weights<'p> {
        self.weights
    }

    pub fn config(&self) -> &'p crate::config::ModelConfig {
        self.weights.config()
    }

    /// The next position to be written (= tokens processed so far).
    pub fn position(&self) -> usize {
        self.cache.len
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Starts a new sequence (keeps the allocations).
    pub fn reset(&mut self) {
        self.cache.len = 0;
    }

    /// Rewinds to position `n` (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    /// The logits computed by the last `prefill` or `decode`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), InferError> {
        if tokens.is_empty() {
            return Err(InferError::Empty);
        }
        let vocab = self.weights.config().vocab_size;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(InferError::TokenOutOfRange { token: t, vocab });
        }
        if self.cache.len + tokens.len() > self.cache.capacity {
            return Err(InferError::ContextFull {
                capacity: self.cache.capacity,
            });
        }
        Ok(())
    }

    /// Feeds `tokens` (batched, causal) and returns the next-token logits after the last one.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], InferError> {
        self.check_tokens(tokens)?;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.forward_batch(chunk, false, &mut Vec::new());
        }
        Ok(&self.logits)
    }

    /// Like `prefill`, but returns the logits of every position, `[tokens.len(), vocab]`
    /// (for evaluation and tests).
    pub fn prefill_all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, InferError> {
        self.check_tokens(tokens)?;
        let mut all = Vec::with_capacity(tokens.len() * self.weights.config().vocab_size);
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.forward_batch(chunk, true, &mut all);
        }
        Ok(all)
    }

    /// Feeds one token at the next position and returns the next-token logits.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], InferError> {
        self.check_tokens(&[token])?;
        let weights = self.weights;
        let cfg = weights.config();
        let eps = cfg.norm_eps as f32;
        let pos = self.cache.len;
        let s = &mut self.one;
        let acts = &mut self.acts;
        weights.embed_row(token as usize, &mut s.x);
        for l in 0..cfg.n_layers {
            let lw = weights.layer(l);
            let ad = LayerAdapter {
                lora: weights.adapter(),
                layer: l,
            };
            kernels::rmsnorm(&mut s.xn, &s.x, lw.attn_norm, eps);
            matvec_many(
                &s.xn,
                acts,
                vec![(lw.wq, &mut s.q), (lw.wk, &mut s.k), (lw.wv, &mut s.v)],
            );
            ad.add(LoraTarget::Q, &s.xn, 1, &mut s.q);
            ad.add(LoraTarget::K, &s.xn, 1, &mut s.k);
            ad.add(LoraTarget::V, &s.xn, 1, &mut s.v);
            add_bias(&mut s.q, lw.bq);
            add_bias(&mut s.k, lw.bk);
            add_bias(&mut s.v, lw.bv);
            self.rope.apply(&mut s.q, pos);
            self.rope.apply(&mut s.k, pos);
            self.cache.store(l, pos, &s.k, &s.v);
            decode_attention::attend_one(
                &s.q,
                &mut s.att,
                &self.cache.k[l],
                &self.cache.v[l],
                pos + 1,
                cfg,
                pos >= PARALLEL_ATTENTION_FROM,
            );
            matvec_many(&s.att, acts, vec![(lw.wo, &mut s.proj)]);
            ad.add(LoraTarget::O, &s.att, 1, &mut s.proj);
            kernels::add_into(&mut s.x, &s.proj);
            ffn_one(s, acts, &lw, ad, eps);
        }
        self.cache.len = pos + 1;
        kernels::rmsnorm(&mut s.xn, &s.x, weights.final_norm(), eps);
        matvec_many(&s.xn, acts, vec![(weights.classifier(), &mut self.logits)]);
        Ok(&self.logits)
    }

    /// Processes `tokens` (already checked) at positions `len..len+n`; leaves the last
    /// token's logits in `self.logits`, and appends every row's logits to `all` when asked.
    fn forward_batch(&mut self, tokens: &[u32], want_all: bool, all: &mut Vec<f32>) {
        let weights = self.weights;
        let cfg = weights.config();
        let (d, kv, h, v) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim, cfg.vocab_size);
        let eps = cfg.norm_eps as f32;
        let n = tokens.len();
        let start = self.cache.len;
        if self.batch.as_ref().is_none_or(|b| b.rows < n) {
            self.batch = Some(Scratch::new(n.max(16), d, kv, h));
        }
        let Some(s) = self.batch.as_mut() else {
            return;
        };
        let acts = &mut self.acts;
        for (row, &t) in s.x[..n * d].chunks_exact_mut(d).zip(tokens) {
            weights.embed_row(t as usize, row);
        }
        for l in 0..cfg.n_layers {
            let lw = weights.layer(l);
            let ad = LayerAdapter {
                lora: weights.adapter(),
                layer: l,
            };
            rmsnorm_rows(&mut s.xn[..n * d], &s.x[..n * d], lw.attn_norm, eps, d);
            matmul_bt_many(
                &s.xn[..n * d],
                n,
                acts,
                vec![
                    (lw.wq, &mut s.q[..n * d]),
                    (lw.wk, &mut s.k[..n * kv]),
                    (lw.wv, &mut s.v[..n * kv]),
                ],
            );
            ad.add(LoraTarget::Q, &s.xn[..n * d], n, &mut s.q[..n * d]);
            ad.add(LoraTarget::K, &s.xn[..n * d], n, &mut s.k[..n * kv]);
            ad.add(LoraTarget::V, &s.xn[..n * d], n, &mut s.v[..n * kv]);
            let rope = &self.rope;
            let mut rows: Vec<_> = s.q[..n * d]
                .chunks_mut(d)
                .zip(s.k[..n * kv].chunks_mut(kv))
                .zip(s.v[..n * kv].chunks_mut(kv))
                .enumerate()
                .collect();
            crate::team::for_each_mut(&mut rows, |(r, ((q, k), v))| {
                add_bias(q, lw.bq);
                rope.apply(q, start + *r);
                add_bias(k, lw.bk);
                rope.apply(k, start + *r);
                add_bias(v, lw.bv);
            });
            self.cache.store(l, start, &s.k[..n * kv], &s.v[..n * kv]);
            prefill_attention::attend_rows(
                &s.q[..n * d],
                &mut s.att[..n * d],
                &self.cache.k[l],
                &self.cache.v[l],
                start,
                cfg,
            );
            matmul_bt_many(
                &s.att[..n * d],
                n,
                acts,
                vec![(lw.wo, &mut s.proj[..n * d])],
            );
            ad.add(LoraTarget::O, &s.att[..n * d], n, &mut s.proj[..n * d]);
            kernels::add_into(&mut s.x[..n * d], &s.proj[..n * d]);
            rmsnorm_rows(&mut s.xn[..n * d], &s.x[..n * d], lw.ffn_norm, eps, d);
            matmul_bt_many(
                &s.xn[..n * d],
                n,
                acts,
                vec![
                    (lw.w_gate, &mut s.gate[..n * h]),
                    (lw.w_up, &mut s.up[..n * h]),
                ],
            );
            ad.add(LoraTarget::Gate, &s.xn[..n * d], n, &mut s.gate[..n * h]);
            ad.add(LoraTarget::Up, &s.xn[..n * d], n, &mut s.up[..n * h]);
            let mut rows: Vec<_> = s.gate[..n * h]
                .chunks_mut(h)
                .zip(s.up[..n * h].chunks(h))
                .collect();
            crate::team::for_each_mut(&mut rows, |(g, u)| kernels::swiglu(g, u));
            matmul_bt_many(
                &s.gate[..n * h],
                n,
                acts,
                vec![(lw.w_down, &mut s.proj[..n * d])],
            );
            ad.add(LoraTarget::Down, &s.gate[..n * h], n, &mut s.proj[..n * d]);
            kernels::add_into(&mut s.x[..n * d], &s.proj[..n * d]);
        }
        self.cache.len = start + n;
        let final_norm = weights.final_norm();
        if want_all {
            rmsnorm_rows(&mut s.xn[..n * d], &s.x[..n * d], final_norm, eps, d);
            let base = all.len();
            all.resize(base + n * v, 0.0);
            matmul_bt_many(
                &s.xn[..n * d],
                n,
                acts,
                vec![(weights.classifier(), &mut all[base..])],
            );
            self.logits.copy_from_slice(&all[base + (n - 1) * v..]);
        } else {
            // Only the last position's logits are needed to continue.
            let last = &s.x[(n - 1) * d..n * d];
            kernels::rmsnorm(&mut s.xn[..d], last, final_norm, eps);
            matvec_many(
                &s.xn[..d],
                acts,
                vec![(weights.classifier(), &mut self.logits)],
            );
        }
    }
}

/// Matrix-vector products sharing the input `x`, in one parallel region: f32 matrices on the
/// f32 kernel, quantized ones with `x` quantized once into `acts`.
fn matvec_many(x: &[f32], acts: &mut QuantizedActs, jobs: Vec<(Mat<'_>, &mut [f32])>) {
    let mut dense = Vec::new();
    let mut quantized = Vec::new();
    for (w, out) in jobs {
        match w {
            Mat::F32(w) => dense.push(MatVec { w, x, out }),
            Mat::Q(w) => quantized.push(quant::QMatVec { w, out }),
        }
    }
    if !dense.is_empty() {
        kernels::matvec_many(dense);
    }
    if !quantized.is_empty() {
        quant::qmatvec_many(x, acts, quantized);
    }
}

/// `out = x[n, k] · wᵀ` for each job, all reading the same rows `x`: f32 matrices through the
/// GEMM, quantized ones through the blocked integer kernel with `x` quantized once.
fn matmul_bt_many(x: &[f32], n: usize, acts: &mut QuantizedActs, jobs: Vec<(Mat<'_>, &mut [f32])>) {
    let k = x.len() / n.max(1);
    let mut kinds = Vec::new();
    for (w, _) in &jobs {
        if let Mat::Q(m) = w {
            if !kinds.contains(&m.qtype().act_kind()) {
                kinds.push(m.qtype().act_kind());
            }
        }
    }
    if !kinds.is_empty() {
        acts.prepare(x, n, k, &kinds);
    }
    for (w, out) in jobs {
        match w {
            Mat::F32(w) => kernels::matmul_bt(x, w, out, n, out.len() / n.max(1), k),
            Mat::Q(w) => quant::qmatmul_bt(x, acts, w, out, n),
        }
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        kernels::add_into(x, b);
    }
}

fn rmsnorm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, d: usize) {
    let mut rows: Vec<_> = out.chunks_exact_mut(d).zip(x.chunks_exact(d)).collect();
    crate::team::for_each_mut(&mut rows, |(o, xr)| kernels::rmsnorm(o, xr, w, eps));
}

/// SwiGLU feed-forward of the single decode row, residual added into `s.x`.
fn ffn_one(
    s: &mut Scratch,
    acts: &mut QuantizedActs,
    lw: &LayerW<'_>,
    ad: LayerAdapter<'_>,
    eps: f32,
) {
    kernels::rmsnorm(&mut s.xn, &s.x, lw.ffn_norm, eps);
    matvec_many(
        &s.xn,
        acts,
        vec![(lw.w_gate, &mut s.gate), (lw.w_up, &mut s.up)],
    );
    ad.add(LoraTarget::Gate, &s.xn, 1, &mut s.gate);
    ad.add(LoraTarget::Up, &s.xn, 1, &mut s.up);
    kernels::swiglu(&mut s.gate, &s.up);
    matvec_many(&s.gate, acts, vec![(lw.w_down, &mut s.proj)]);
    ad.add(LoraTarget::Down, &s.gate, 1, &mut s.proj);
    kernels::add_into(&mut s.x, &s.proj);
}
