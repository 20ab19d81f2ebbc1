//! A LLaMA model whose matrices stay quantized ([`QMatrix`]); norms and biases are f32.
//! Tensor names, shapes and the RoPE row order are those of `engine::Params` (rotate-half).

use super::{ActPrecision, QMatrix, QType, QuantError};
use crate::config::ModelConfig;
use crate::params::{names, ParamLayout, Params};

/// One transformer layer.
#[derive(Debug, Clone)]
pub struct QLayer {
    pub attn_norm: Vec<f32>,
    pub wq: QMatrix,
    pub wk: QMatrix,
    pub wv: QMatrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub wo: QMatrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: QMatrix,
    pub w_up: QMatrix,
    pub w_down: QMatrix,
}

/// The weights of a model for inference, matrices in block formats.
#[derive(Debug, Clone)]
pub struct QuantModel {
    pub config: ModelConfig,
    /// `[vocab, dim]`; rows are dequantized one token at a time.
    pub embedding: QMatrix,
    pub layers: Vec<QLayer>,
    pub final_norm: Vec<f32>,
    /// `[vocab, dim]` when untied.
    pub output: Option<QMatrix>,
    /// The activations the 32-block matrices meet (default 16-bit: logits within ~1e-3 of
    /// the dequantized f32 model; 8-bit is faster and ~0.5 off on SmolLM2's logits).
    pub act_precision: ActPrecision,
    /// A LoRA adapter run on top of the blocks, unmerged ([`QuantModel::attach_adapter`]).
    pub adapter: Option<crate::lora::LoraParams>,
}

impl QuantModel {
    /// Runs `lora` on top of the frozen blocks without merging it: every adapted projection
    /// adds `scale · B (A x)` to its product, so memory stays the file's plus the adapter's
    /// (merging would need the base in f32). Errors when the adapter was made for another
    /// shape.
    pub fn attach_adapter(
        &mut self,
        lora: crate::lora::LoraParams,
    ) -> Result<(), crate::error::EngineError> {
        lora.check_shape(&self.config)?;
        self.adapter = Some(lora);
        Ok(())
    }

    /// Builds the model from `tensor(name, shape)`, asked once for every tensor of
    /// `ParamLayout::for_config(cfg)` (Hugging Face names, `[out, in]` shapes; a 1-D tensor is
    /// asked as `[1, n]` and dequantized to f32 here). Shapes are checked.
    pub fn build<E: From<QuantError>>(
        cfg: &ModelConfig,
        mut tensor: impl FnMut(&str, &[usize]) -> Result<QMatrix, E>,
    ) -> Result<QuantModel, E> {
        cfg.validate().map_err(QuantError::from)?;
        let mut get = |name: &str, shape: &[usize]| -> Result<QMatrix, E> {
            let (rows, cols) = match shape {
                [n] => (1, *n),
                [r, c] => (*r, *c),
                _ => (0, 0),
            };
            let m = tensor(name, shape)?;
            if m.rows() != rows || m.cols() != cols {
                return Err(QuantError::Shape {
                    name: name.into(),
                    rows: m.rows(),
                    cols: m.cols(),
                    want_rows: rows,
                    want_cols: cols,
                }
                .into());
            }
            Ok(m)
        };
        let layout = ParamLayout::for_config(cfg);
        let shape = |name: &str| -> Vec<usize> {
            layout
                .find(name)
                .map(|t| t.shape.clone())
                .unwrap_or_default()
        };
        let mut mat = |name: String| get(&name, &shape(&name));
        let (d, v) = (cfg.dim, cfg.vocab_size);
        let embedding = mat(names::EMBED.into())?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| names::layer(l, s);
            let mut vec = |name: String| mat(name).map(|m| m.to_f32());
            let attn_norm = vec(n(names::ATTN_NORM))?;
            let ffn_norm = vec(n(names::FFN_NORM))?;
            let (bq, bk, bv) = if cfg.qkv_bias {
                (
                    Some(vec(n(names::BQ))?),
                    Some(vec(n(names::BK))?),
                    Some(vec(n(names::BV))?),
                )
            } else {
                (None, None, None)
            };
            layers.push(QLayer {
                attn_norm,
                wq: mat(n(names::WQ))?,
                wk: mat(n(names::WK))?,
                wv: mat(n(names::WV))?,
                bq,
                bk,
                bv,
                wo: mat(n(names::WO))?,
                ffn_norm,
                w_gate: mat(n(names::W_GATE))?,
                w_up: mat(n(names::W_UP))?,
                w_down: mat(n(names::W_DOWN))?,
            });
        }
        let final_norm = mat(names::FINAL_NORM.into())?.to_f32();
        let output = if cfg.tied_embeddings {
            None
        } else {
            Some(mat(names::LM_HEAD.into())?)
        };
        debug_assert_eq!(embedding.rows() * embedding.cols(), v * d);
        Ok(QuantModel {
            config: cfg.clone(),
            embedding,
            layers,
            final_norm,
            output,
            act_precision: ActPrecision::I16,
            adapter: None,
        })
    }

    /// The model of f32 `params` with every matrix stored as F32 (exact; tests and small
    /// models), or encoded by `encode` where it returns a matrix.
    pub fn from_params(
        params: &Params,
        mut encode: impl FnMut(&str, usize, usize, &[f32]) -> Option<QMatrix>,
    ) -> Result<QuantModel, QuantError> {
        QuantModel::build(&params.config, |name, shape| {
            let data = params.get(name).unwrap_or(&[]);
            let (rows, cols) = match shape {
                [n] => (1, *n),
                [r, c] => (*r, *c),
                _ => (0, 0),
            };
            if shape.len() == 2 {
                if let Some(m) = encode(name, rows, cols, data) {
                    return Ok(m);
                }
            }
            QMatrix::from_f32(name, rows, cols, data)
        })
    }

    /// Every matrix of a type with an interleaved layout converted to it (copies; the GGUF
    /// loader interleaves in place instead).
    pub fn interleave(&mut self) {
        self.embedding = self.embedding.interleaved();
        for l in &mut self.layers {
            for w in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ] {
                *w = w.interleaved();
            }
        }
        if let Some(o) = &mut self.output {
            *o = o.interleaved();
        }
    }

    /// The classifier `[vocab, dim]` (the embedding when tied).
    pub fn classifier(&self) -> &QMatrix {
        self.output.as_ref().unwrap_or(&self.embedding)
    }

    /// Every matrix once, the classifier included (the embedding only when it is the tied
    /// classifier).
    pub fn matrices(&self) -> Vec<&QMatrix> {
        let mut m: Vec<&QMatrix> = Vec::new();
        for l in &self.layers {
            m.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
        }
        m.push(self.classifier());
        m
    }

    /// Bytes one decoded token reads: every matrix once (classifier included), the norms and
    /// biases, and one embedding row.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let mats: u64 = self.matrices().iter().map(|m| m.bytes().len() as u64).sum();
        let vecs: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len()
                    + l.ffn_norm.len()
                    + [&l.bq, &l.bk, &l.bv]
                        .iter()
                        .map(|b| b.as_ref().map_or(0, |b| b.len()))
                        .sum::<usize>()
            })
            .sum::<usize>()
            + self.final_norm.len();
        mats + 4 * vecs as u64 + self.embedding.row_bytes() as u64
    }

    /// Bytes of every matrix held (embedding and classifier once each).
    pub fn weight_bytes(&self) -> u64 {
        let mut total: u64 = self.matrices().iter().map(|m| m.bytes().len() as u64).sum();
        if self.output.is_some() {
            total += self.embedding.bytes().len() as u64;
        }
        total
    }

    /// "Q4_1 (+Q8_0)": the type of most matrices first.
    pub fn type_summary(&self) -> String {
        let mut counts: Vec<(QType, usize)> = Vec::new();
        let mut all = self.matrices();
        if self.output.is_some() {
            all.push(&self.embedding);
        }
        for m in all {
            match counts.iter_mut().find(|(t, _)| *t == m.qtype()) {
                Some((_, c)) => *c += 1,
                None => counts.push((m.qtype(), 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let names: Vec<&str> = counts.iter().map(|c| c.0.name()).collect();
        names.join("+")
    }
}
