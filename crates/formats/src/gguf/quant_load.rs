//! GGUF models for quantized inference: the file is read once and its tensor blocks stay as
//! they are (`engine::quant::QMatrix` over the shared bytes). Only the q/k rows are reordered
//! in place (interleaved -> rotate-half RoPE, whole rows, so blocks are untouched), and norms
//! and biases become f32. Q5_0 matrices become Q8_0 with the same scales (exact: see
//! [`q5_0_as_q8_0`]); Q5_1, which has no kernel yet, is dequantized to F32 matrices.

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
        GgmlType::Q5_0 | GgmlType::Q5_1 => return None,
    })
}

/// Loads `path` for quantized inference (one read of the file).
pub fn load_quant_model(path: &Path) -> Result<QuantLoaded> {
    let mut bytes = crate::big_read::read_file(path).map_err(|e| FormatError::io(path, e))?;
    let h = parse_header(path, &bytes)?;
    let cfg = model_config(&h)?;
    let layout = ParamLayout::for_config(&cfg);
    // q/k rows into the rotate-half order, in place (before the bytes are shared).
    for spec in &layout.tensors {
        let Some(heads) = rope_heads(&spec.name, &cfg) else {
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
    // Q8_0 / Q4_0 / Q4_1 matrices into rows interleaved by 8 for the vector units, in place
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
    let model = build(path, &h, &cfg, &buf, &shared)?;
    let meta_params = Params {
        config: cfg.clone(),
        layout: Arc::new(layout),
        data: Vec::new(),
    };
    let mut meta = with_metadata(path, &h, meta_params)?;
    meta.source = format!(
        "gguf v{} {} (weights as stored, in their blocks)",
        h.version,
        model.type_summary()
    );
    Ok(QuantLoaded { model, meta })
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

fn build(
    path: &Path,
    h: &GgufHeader,
    cfg: &ModelConfig,
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
                    if shape.len() == 1 && rope_heads(name, cfg).is_some() {
                        // An F32 q/k bias: reorder as f32 values.
                        return f32_matrix(h, t, name, shape, cfg, bytes, rows, cols);
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
                None if t.ggml_type == GgmlType::Q5_0 && shape.len() == 2 => {
                    let mut q8 = q5_0_as_q8_0(&bytes[range]);
                    let row_bytes = q8.len() / rows.max(1);
                    if let Some(heads) = rope_heads(name, cfg) {
                        crate::rope::interleaved_to_half_rows(&mut q8, heads, row_bytes);
                    }
                    packed::interleave_in_place(QType::Q8_0, rows, cols, &mut q8);
                    let shared: SharedBytes = Arc::new(q8);
                    Ok(QMatrix::new_interleaved(
                        name,
                        QType::Q8_0,
                        rows,
                        cols,
                        shared,
                        0,
                    )?)
                }
                _ => f32_matrix(h, t, name, shape, cfg, bytes, rows, cols),
            }
        },
    );
    r.map_err(|e| match e {
        BuildError::Format(f) => f,
        BuildError::Quant(q) => FormatError::invalid(path, "tensors", q.to_string()),
    })
}

/// Q5_0 blocks (f16 d, 32 high bits, 16 bytes of low nibbles; value d·(q − 16) with q < 32)
/// rewritten as Q8_0 blocks (f16 d, 32 int8 quants) holding q − 16: the same values exactly,
/// so the interleaved Q8_0 kernels serve Q5_0 files (34 bytes per 32 values instead of 22, far
/// below the 128 of F32). Whole blocks only: the caller's shape check covers the length.
fn q5_0_as_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / 22 * 34);
    for b in src.chunks_exact(22) {
        out.extend_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let value = |low: u8, bit: u32| ((low as u32 | ((qh >> bit) & 1) << 4) as i32 - 16) as i8;
        for (j, &q) in qs.iter().enumerate() {
            out.push(value(q & 0x0f, j as u32) as u8);
        }
        for (j, &q) in qs.iter().enumerate() {
            out.push(value(q >> 4, j as u32 + 16) as u8);
        }
    }
    out
}

/// The tensor dequantized to an F32 matrix (RoPE rows reordered).
#[allow(clippy::too_many_arguments)]
fn f32_matrix(
    h: &GgufHeader,
    t: &super::TensorInfo,
    name: &str,
    shape: &[usize],
    cfg: &ModelConfig,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<QMatrix, BuildError> {
    let mut v = vec![0f32; rows * cols];
    super::reader::read_tensor_f32(h, bytes, t, &mut v)?;
    to_internal_rope(name, shape, cfg, &mut v);
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

    #[test]
    fn q5_0_blocks_become_the_same_values_as_q8_0() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut src = Vec::new();
        for i in 0..64 {
            src.extend_from_slice(&half::f16::from_f32(0.01 * (i + 1) as f32).to_le_bytes());
            for _ in 0..20 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                src.push((s >> 56) as u8);
            }
        }
        // Every high bit set and clear at least once, and the extreme quants.
        src[2..6].copy_from_slice(&[0xff; 4]);
        src[6..22].copy_from_slice(&[0xff; 16]);
        src[24..44].copy_from_slice(&[0; 20]);
        let q8 = q5_0_as_q8_0(&src);
        assert_eq!(q8.len(), 64 * 34);
        let mut want = vec![0f32; 64 * 32];
        let mut got = vec![0f32; 64 * 32];
        super::super::quant::dequantize(GgmlType::Q5_0, &src, &mut want);
        super::super::quant::dequantize(GgmlType::Q8_0, &q8, &mut got);
        assert_eq!(want, got);
        let d = |i: usize| half::f16::from_f32(0.01 * (i + 1) as f32).to_f32();
        assert_eq!(got[0], 15.0 * d(0)); // q = 31
        assert_eq!(got[32], -16.0 * d(1)); // q = 0
    }
}
