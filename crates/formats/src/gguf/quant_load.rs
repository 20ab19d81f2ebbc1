//! GGUF models for quantized inference: the file is read once and its tensor blocks stay as
//! they are (`engine::quant::QMatrix` over the shared bytes). Only the q/k rows are reordered
//! in place (interleaved -> rotate-half RoPE, whole rows, so blocks are untouched), and norms
//! and biases become f32. Every matrix type we read has a kernel (Q5_0 and Q5_1 included),
//! so no matrix is expanded, except Q3_K and Q2_K, which become Q6_K and Q8_0 at load
//! (`super::repack`).

use super::quant::GgmlType;
use super::{find_tensor, model_config, parse_header, with_metadata, GgufHeader};
use crate::assemble::{rope_heads, to_internal_rope};
use crate::error::{FormatError, Result};
use crate::model::LoadedModel;
use engine::quant::{packed, QMatrix, QType, QuantError, QuantModel, SharedBytes};
use engine::{ModelConfig, ParamLayout, Params};
use std::path::Path;
use std::sync::Arc;

/// A quantized model and its metadata. `meta.params` holds the config and layout only (no
/// weight data: `meta.params.data` is empty).
pub struct QuantLoaded {
    pub model: QuantModel,
    pub meta: LoadedModel,
}

/// The engine type that keeps `t`'s blocks as they are, if there is a kernel for it.
pub fn engine_type(t: GgmlType) -> Option<QType> {
    Some(match t {
        GgmlType::F32 => QType::F32,
        GgmlType::F16 => QType::F16,
        GgmlType::BF16 => QType::BF16,
        GgmlType::Q8_0 => QType::Q8_0,
        GgmlType::Q4_0 => QType::Q4_0,
        GgmlType::Q4_1 => QType::Q4_1,
        GgmlType::Q4K => QType::Q4K,
        GgmlType::Q5K => QType::Q5K,
        GgmlType::Q6K => QType::Q6K,
        GgmlType::Q5_0 => QType::Q5_0,
        GgmlType::Q5_1 => QType::Q5_1,
        GgmlType::Q2K | GgmlType::Q3K => return None,
    })
}

/// Loads `path` for quantized inference (one read of the file).
pub fn load_quant_model(path: &Path) -> Result<QuantLoaded> {
    let mut bytes = crate::big_read::read_file(path).map_err(|e| FormatError::io(path, e))?;
    let h = parse_header(path, &bytes)?;
    let cfg = model_config(&h)?;
    let layout = ParamLayout::for_config(&cfg);
    let rope = RopeRows(super::rope_rows_interleaved(&h)?);
    // q/k rows into the rotate-half order, in place (before the bytes are shared).
    for spec in &layout.tensors {
        let Some(heads) = rope.heads(&spec.name, &cfg) else {
            continue;
        };
        let t = find_tensor(path, &h, &spec.name, &spec.shape)?;
        if spec.shape.len() != 2 || engine_type(t.ggml_type).is_none() {
            continue; // biases and dequantized types are permuted as f32 below
        }
        let range = tensor_range(path, &h, t, bytes.len())?;
        let row_bytes = t.n_bytes as usize / spec.shape[0];
        crate::rope::interleaved_to_half_rows(&mut bytes[range], heads, row_bytes);
    }
    // Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 matrices into rows interleaved by 8 for the vector units, in place
    // (same size: no second copy of the weights).
    for spec in &layout.tensors {
        let t = find_tensor(path, &h, &spec.name, &spec.shape)?;
        match (engine_type(t.ggml_type), spec.shape.as_slice()) {
            (Some(qt), &[rows, cols]) if packed::interleavable(qt) => {
                let range = tensor_range(path, &h, t, bytes.len())?;
                if range.len() != rows * (cols / qt.block_len()) * qt.block_bytes() {
                    return Err(FormatError::invalid(
                        path,
                        &spec.name,
                        format!(
                            "{} bytes do not hold [{rows}, {cols}] {}",
                            range.len(),
                            qt.name()
                        ),
                    ));
                }
                packed::interleave_in_place(qt, rows, cols, &mut bytes[range]);
            }
            _ => {}
        }
    }
    let shared: Arc<Vec<u8>> = Arc::new(bytes);
    let buf: SharedBytes = shared.clone();
    let model = build(path, &h, &cfg, rope, &buf, &shared)?;
    let meta_params = Params {
        config: cfg.clone(),
        layout: Arc::new(layout),
        data: Vec::new(),
    };
    let mut meta = with_metadata(path, &h, meta_params)?;
    meta.source = format!(
        "gguf v{} {} (weights as stored, in their blocks{})",
        h.version,
        model.type_summary(),
        repacked_note(&h)
    );
    Ok(QuantLoaded { model, meta })
}

/// ", Q3_K repacked as Q6_K" and the like for the read-only types the file holds.
fn repacked_note(h: &GgufHeader) -> String {
    let mut seen: Vec<GgmlType> = Vec::new();
    for t in &h.tensors {
        let read_only = t.dims.len() == 2 && super::repack::target(t.ggml_type).is_some();
        if read_only && !seen.contains(&t.ggml_type) {
            seen.push(t.ggml_type);
        }
    }
    seen.iter()
        .filter_map(|&t| {
            Some(format!(
                ", {} repacked as {}",
                t.name(),
                super::repack::target(t)?.name()
            ))
        })
        .collect()
}

fn tensor_range(
    path: &Path,
    h: &GgufHeader,
    t: &super::TensorInfo,
    len: usize,
) -> Result<std::ops::Range<usize>> {
    h.data_offset
        .checked_add(t.offset)
        .and_then(|s| Some((s, s.checked_add(t.n_bytes)?)))
        .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?))
        .filter(|r| r.end <= len)
        .ok_or_else(|| FormatError::invalid(path, &t.name, "data runs past the end of the file"))
}

enum BuildError {
    Format(FormatError),
    Quant(QuantError),
}

impl From<QuantError> for BuildError {
    fn from(e: QuantError) -> Self {
        BuildError::Quant(e)
    }
}

impl From<FormatError> for BuildError {
    fn from(e: FormatError) -> Self {
        BuildError::Format(e)
    }
}

/// Whether the file's q/k rows are in the interleaved RoPE order, to be reordered at load.
#[derive(Clone, Copy)]
struct RopeRows(bool);

impl RopeRows {
    /// The head count of a q/k tensor whose rows need reordering.
    fn heads(self, name: &str, cfg: &ModelConfig) -> Option<usize> {
        rope_heads(name, cfg).filter(|_| self.0)
    }
}

fn build(
    path: &Path,
    h: &GgufHeader,
    cfg: &ModelConfig,
    rope: RopeRows,
    buf: &SharedBytes,
    bytes: &[u8],
) -> Result<QuantModel> {
    let r = QuantModel::build(
        cfg,
        |name: &str, shape: &[usize]| -> std::result::Result<QMatrix, BuildError> {
            let t = find_tensor(path, h, name, shape)?;
            let (rows, cols) = match shape {
                [n] => (1, *n),
                [r, c] => (*r, *c),
                _ => (0, 0),
            };
            let range = tensor_range(path, h, t, bytes.len())?;
            match engine_type(t.ggml_type) {
                Some(qt) if shape.len() == 2 || qt == QType::F32 => {
                    if shape.len() == 1 && rope.heads(name, cfg).is_some() {
                        // An F32 q/k bias: reorder as f32 values.
                        return f32_matrix(h, t, name, shape, cfg, rope, bytes, rows, cols);
                    }
                    Ok(QMatrix::new_interleaved(
                        name,
                        qt,
                        rows,
                        cols,
                        buf.clone(),
                        range.start,
                    )?)
                }
                None if shape.len() == 2 && super::repack::target(t.ggml_type).is_some() => {
                    repacked_matrix(path, t, name, cfg, rope, &bytes[range], rows, cols)
                }
                _ => f32_matrix(h, t, name, shape, cfg, rope, bytes, rows, cols),
            }
        },
    );
    r.map_err(|e| match e {
        BuildError::Format(f) => f,
        BuildError::Quant(q) => FormatError::invalid(path, "tensors", q.to_string()),
    })
}

/// A tensor of a read-only type in its kernel type (`super::repack`): RoPE rows reordered
/// and rows interleaved as the loader does for the file's own blocks.
#[allow(clippy::too_many_arguments)]
fn repacked_matrix(
    path: &Path,
    t: &super::TensorInfo,
    name: &str,
    cfg: &ModelConfig,
    rope: RopeRows,
    src: &[u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<QMatrix, BuildError> {
    let bad = || {
        FormatError::invalid(
            path,
            name,
            format!(
                "{} bytes do not hold [{rows}, {cols}] {}",
                src.len(),
                t.ggml_type.name()
            ),
        )
    };
    let qt = super::repack::target(t.ggml_type).ok_or_else(bad)?;
    let mut bytes = super::repack::repack(t.ggml_type, src, rows, cols).ok_or_else(bad)?;
    if let Some(heads) = rope.heads(name, cfg) {
        let row_bytes = bytes.len() / rows.max(1);
        crate::rope::interleaved_to_half_rows(&mut bytes, heads, row_bytes);
    }
    if packed::interleavable(qt) {
        packed::interleave_in_place(qt, rows, cols, &mut bytes);
    }
    Ok(QMatrix::new_interleaved(
        name,
        qt,
        rows,
        cols,
        Arc::new(bytes),
        0,
    )?)
}

/// The tensor dequantized to an F32 matrix (RoPE rows reordered).
#[allow(clippy::too_many_arguments)]
fn f32_matrix(
    h: &GgufHeader,
    t: &super::TensorInfo,
    name: &str,
    shape: &[usize],
    cfg: &ModelConfig,
    rope: RopeRows,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<QMatrix, BuildError> {
    let mut v = vec![0f32; rows * cols];
    super::reader::read_tensor_f32(h, bytes, t, &mut v)?;
    if rope.0 {
        to_internal_rope(name, shape, cfg, &mut v);
    }
    Ok(QMatrix::from_f32(name, rows, cols, &v)?)
}

/// Whether `path` is a GGUF file with at least one matrix that is not F32 (the files the
/// quantized path is for). Any read error gives false: the ordinary loader then reports it.
pub fn is_quantized_gguf(path: &Path) -> bool {
    if !matches!(crate::detect_format(path), Ok(crate::ModelFormat::Gguf)) {
        return false;
    }
    match super::read_header(path) {
        Ok(h) => h
            .tensors
            .iter()
            .any(|t| t.dims.len() == 2 && t.ggml_type != GgmlType::F32),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_params() -> Params {
        let cfg = ModelConfig {
            dim: 64,
            hidden_dim: 96,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 40,
            max_seq_len: 32,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tied_embeddings: true,
            qkv_bias: false,
        };
        engine::init::init_params(&cfg, 5).expect("params")
    }

    /// Q5_0 and Q5_1 files load with their blocks as they are (interleaved, no expansion)
    /// and dequantize to exactly the values of the f32 loader (an independent decoder).
    #[test]
    fn q5_matrices_load_natively() {
        let params = tiny_params();
        let dir = std::env::temp_dir().join(format!("nf-q5-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        for (dtype, qt) in [(GgmlType::Q5_0, QType::Q5_0), (GgmlType::Q5_1, QType::Q5_1)] {
            let file = dir.join(format!("tiny-{}.gguf", dtype.name()));
            let opts = super::super::WriteOptions {
                dtype,
                tokenizer: None,
                chat_template: None,
                name: Some("tiny"),
            };
            super::super::write(&file, &params, &opts).expect("write");
            let q = load_quant_model(&file).expect("load quantized");
            let f = crate::load_model(&file).expect("load f32");
            let wq = &q.model.layers[0].wq;
            assert_eq!(wq.qtype(), qt, "{:?}", q.model.type_summary());
            assert!(wq.is_interleaved());
            assert_eq!(q.model.type_summary().split('+').next(), Some(qt.name()));
            let l = &q.model.layers[0];
            let mats = [
                ("model.layers.0.self_attn.q_proj.weight", &l.wq),
                ("model.layers.0.self_attn.k_proj.weight", &l.wk),
                ("model.layers.0.self_attn.v_proj.weight", &l.wv),
                ("model.layers.0.self_attn.o_proj.weight", &l.wo),
                ("model.layers.0.mlp.gate_proj.weight", &l.w_gate),
                ("model.layers.0.mlp.up_proj.weight", &l.w_up),
                ("model.layers.0.mlp.down_proj.weight", &l.w_down),
                ("model.embed_tokens.weight", &q.model.embedding),
            ];
            for (name, m) in mats {
                let want = f.params.get(name).expect(name);
                assert_eq!(m.to_f32(), want, "{} {name}", dtype.name());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A Q5 tensor cut short is an error naming the file, not a panic.
    #[test]
    fn truncated_q5_file_is_an_error() {
        let params = tiny_params();
        let dir = std::env::temp_dir().join(format!("nf-q5-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("tiny.gguf");
        let opts = super::super::WriteOptions {
            dtype: GgmlType::Q5_1,
            tokenizer: None,
            chat_template: None,
            name: None,
        };
        super::super::write(&file, &params, &opts).expect("write");
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() - 100]).expect("cut");
        let err = load_quant_model(&file)
            .err()
            .expect("a cut file must not load");
        assert!(err.to_string().contains("tiny.gguf"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
