//! Builds [`Params`] from a reader that can produce each named tensor.

use crate::error::{FormatError, Result};
use engine::{ModelConfig, Params};
use std::path::Path;

/// Validates `cfg`, asks `check` whether the file really holds every tensor of the layout
/// (so a lying header cannot make us allocate), checks memory, allocates the flat buffer and
/// asks `fill` for every tensor by its Hugging Face name and expected shape.
pub(crate) fn build_params(
    file: &Path,
    cfg: &ModelConfig,
    mut check: impl FnMut(&str, &[usize]) -> Result<()>,
    mut fill: impl FnMut(&str, &[usize], &mut [f32]) -> Result<()>,
) -> Result<Params> {
    cfg.validate().map_err(|e| FormatError::config(file, e))?;
    for spec in &engine::ParamLayout::for_config(cfg).tensors {
        check(&spec.name, &spec.shape)?;
    }
    let bytes = (cfg.param_count() as u64).saturating_mul(4);
    ModelConfig::check_fits_in_memory(bytes).map_err(|e| FormatError::config(file, e))?;
    let mut params = Params::zeros(cfg).map_err(|e| FormatError::config(file, e))?;
    // Still untouched (zeroed lazily by the kernel): huge pages can back it from the start.
    crate::big_read::advise_huge_pages(params.data.as_mut_ptr().cast(), params.data.len() * 4);
    let layout = params.layout.clone();
    for spec in &layout.tensors {
        fill(&spec.name, &spec.shape, &mut params.data[spec.range()])?;
    }
    Ok(params)
}

/// Whether a tensor name is a q or k projection (weight or bias) and for how many heads.
pub(crate) fn rope_heads(name: &str, cfg: &ModelConfig) -> Option<usize> {
    if name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias") {
        Some(cfg.n_heads)
    } else if name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias") {
        Some(cfg.n_kv_heads)
    } else {
        None
    }
}

/// Converts a tensor read in interleaved RoPE order (GGUF, llama2.c) to the internal one.
pub(crate) fn to_internal_rope(name: &str, shape: &[usize], cfg: &ModelConfig, data: &mut [f32]) {
    if let Some(heads) = rope_heads(name, cfg) {
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        crate::rope::interleaved_to_half(data, heads, cols);
    }
}

/// The tensor in the interleaved RoPE order that GGUF and llama2.c store (a copy).
pub(crate) fn to_file_rope(
    name: &str,
    shape: &[usize],
    cfg: &ModelConfig,
    data: &[f32],
) -> Vec<f32> {
    let mut out = data.to_vec();
    if let Some(heads) = rope_heads(name, cfg) {
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        crate::rope::half_to_interleaved(&mut out, heads, cols);
    }
    out
}

/// Little-endian f32s of `bytes` (length a multiple of 4, checked by the caller).
pub(crate) fn f32s_from_le(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}
