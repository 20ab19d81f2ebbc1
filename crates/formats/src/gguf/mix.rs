//! Which ggml type each tensor gets when a model is written "mostly" in one type: the
//! choices llama.cpp's `llama_model_quantize` makes for the llama architecture (its
//! `llama_tensor_get_type` and shape fallback), so our files look like its files.
//!
//! | `--dtype` | llama.cpp file type | bumps |
//! |---|---|---|
//! | q8_0 | MOSTLY_Q8_0 (7) | none |
//! | q4_0, q4_1 | MOSTLY_Q4_0 (2), MOSTLY_Q4_1 (3) | output (or the tied embedding) Q6_K |
//! | q4_k | MOSTLY_Q4_K_M (15) | output Q6_K; attn_v and ffn_down Q6_K in the "more bits" layers |
//! | q5_k | MOSTLY_Q5_K_M (17) | output Q6_K; attn_v and ffn_down Q6_K in the "more bits" layers |
//! | q6_k | MOSTLY_Q6_K (18) | none |
//!
//! The output layer goes to Q8_0 instead when its rows are not whole blocks of the requested
//! type. Then every matrix whose rows are not whole blocks of its type falls back: Q4_K → Q5_0,
//! Q5_K → Q5_1, Q6_K → Q8_0, and to F16 when not even 32 divides the row. Vectors (norms,
//! biases) stay F32.

use super::quant::GgmlType;

/// What the choice depends on, for one tensor.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// GGUF tensor name (`token_embd.weight`, `blk.3.attn_v.weight`, ...).
    pub name: &'a str,
    /// Number of dimensions (1 for norms and biases).
    pub n_dims: usize,
    /// Row length (GGUF `ne[0]`).
    pub cols: usize,
    pub n_layers: usize,
    /// The embedding doubles as the output layer.
    pub tied: bool,
}

/// The GGUF `general.file_type` of a file written mostly in `dtype`.
pub fn file_type(dtype: GgmlType) -> u32 {
    match dtype {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 11,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q4K => 15,
        GgmlType::Q5K => 17,
        GgmlType::Q6K => 18,
        GgmlType::BF16 => 32,
    }
}

/// llama.cpp's "use more bits" layers of the _M mixes: the first and last eighth, and every
/// third layer in between.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The type of one tensor in a file written mostly in `dtype`.
pub fn tensor_type(dtype: GgmlType, s: &Slot) -> GgmlType {
    if s.n_dims < 2 || s.name.ends_with("_norm.weight") || !s.name.ends_with("weight") {
        return GgmlType::F32;
    }
    if !is_quantized(dtype) {
        return dtype;
    }
    let k_mix = matches!(dtype, GgmlType::Q4K | GgmlType::Q5K);
    let is_output = s.name == "output.weight" || (s.tied && s.name == "token_embd.weight");
    let mut t = dtype;
    if is_output {
        if !s.cols.is_multiple_of(dtype.block_len()) {
            t = GgmlType::Q8_0;
        } else if dtype != GgmlType::Q8_0 {
            t = GgmlType::Q6K;
        }
    } else if k_mix && (s.name.ends_with(".attn_v.weight") || s.name.ends_with(".ffn_down.weight"))
    {
        if let Some(layer) = layer_of(s.name) {
            if use_more_bits(layer, s.n_layers) {
                t = GgmlType::Q6K;
            }
        }
    }
    fallback(t, s.cols)
}

/// A type whose blocks divide the row, as llama.cpp's `tensor_type_fallback`.
fn fallback(t: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(t.block_len()) {
        return t;
    }
    let smaller = match t {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if cols.is_multiple_of(smaller.block_len()) {
        smaller
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, cols: usize, tied: bool) -> Slot<'_> {
        Slot {
            name,
            n_dims: 2,
            cols,
            n_layers: 32,
            tied,
        }
    }

    #[test]
    fn more_bits_layers_match_llama_cpp_for_32_layers() {
        // 0..4 and 28..32, plus 4 + 3k + 2 in between.
        let got: Vec<usize> = (0..32).filter(|&l| use_more_bits(l, 32)).collect();
        assert_eq!(
            got,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn q4_k_m_mix_on_a_4096_wide_model() {
        let t = |n: &str, tied| tensor_type(GgmlType::Q4K, &slot(n, 4096, tied));
        assert_eq!(t("output.weight", false), GgmlType::Q6K);
        assert_eq!(t("token_embd.weight", false), GgmlType::Q4K);
        assert_eq!(t("token_embd.weight", true), GgmlType::Q6K);
        assert_eq!(t("blk.0.attn_v.weight", false), GgmlType::Q6K);
        assert_eq!(t("blk.4.attn_v.weight", false), GgmlType::Q4K);
        assert_eq!(t("blk.6.ffn_down.weight", false), GgmlType::Q6K);
        assert_eq!(t("blk.7.ffn_down.weight", false), GgmlType::Q4K);
        assert_eq!(t("blk.0.attn_q.weight", false), GgmlType::Q4K);
        assert_eq!(t("blk.0.attn_norm.weight", false), GgmlType::F32);
        let one_d = Slot {
            n_dims: 1,
            ..slot("blk.0.attn_q.bias", 4096, false)
        };
        assert_eq!(tensor_type(GgmlType::Q4K, &one_d), GgmlType::F32);
    }

    #[test]
    fn rows_that_are_not_whole_super_blocks_fall_back() {
        // SmolLM2: 576-wide rows (2.25 super-blocks), 1536-wide ffn_down rows.
        let t = |d, n: &str, cols| tensor_type(d, &slot(n, cols, true));
        assert_eq!(t(GgmlType::Q4K, "blk.5.attn_q.weight", 576), GgmlType::Q5_0);
        assert_eq!(t(GgmlType::Q5K, "blk.5.attn_q.weight", 576), GgmlType::Q5_1);
        assert_eq!(t(GgmlType::Q6K, "blk.5.attn_q.weight", 576), GgmlType::Q8_0);
        assert_eq!(
            t(GgmlType::Q4K, "blk.5.ffn_down.weight", 1536),
            GgmlType::Q4K
        );
        assert_eq!(t(GgmlType::Q4K, "token_embd.weight", 576), GgmlType::Q8_0);
        // 32-block types keep the output at Q6_K only when the row is whole super-blocks.
        assert_eq!(t(GgmlType::Q4_0, "token_embd.weight", 576), GgmlType::Q8_0);
        assert_eq!(t(GgmlType::Q4_1, "token_embd.weight", 512), GgmlType::Q6K);
        assert_eq!(t(GgmlType::Q8_0, "token_embd.weight", 512), GgmlType::Q8_0);
        // Not even 32 divides the row: F16.
        assert_eq!(t(GgmlType::Q4K, "blk.0.attn_q.weight", 100), GgmlType::F16);
        assert_eq!(t(GgmlType::Q8_0, "blk.0.attn_q.weight", 100), GgmlType::F16);
        assert_eq!(t(GgmlType::F16, "blk.0.attn_q.weight", 100), GgmlType::F16);
    }
}
