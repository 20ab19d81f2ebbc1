//! Model shape, read at run time and validated before anything is allocated.

use serde::{Deserialize, Serialize};

/// Errors in a model configuration. Each names the field and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("model config: `{field}` is {value}, must be {rule}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("model config: sizes overflow (parameter count does not fit in 64 bits)")]
    Overflow,
    #[error("model config: the model needs {needed_mib} MiB but only {available_mib} MiB of memory is available")]
    TooLarge { needed_mib: u64, available_mib: u64 },
}

/// The shape of a LLaMA-family model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    /// The classifier shares the token-embedding matrix.
    pub tied_embeddings: bool,
    /// Qwen2-style bias on the q, k and v projections.
    pub qkv_bias: bool,
}

/// Upper bounds that no sensible model reaches; anything above is a corrupt header.
const MAX_DIM: usize = 1 << 16;
const MAX_HIDDEN: usize = 1 << 18;
const MAX_LAYERS: usize = 1024;
const MAX_HEADS: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;
const MAX_SEQ: usize = 1 << 22;

fn check(field: &'static str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(ConfigError::Invalid {
            field,
            value: value.to_string(),
            rule: "between 1 and a sane maximum",
        });
    }
    Ok(())
}

impl ModelConfig {
    /// Named shapes: the reference models of DESIGN.md and a tiny one for tests.
    pub fn preset(name: &str) -> Option<ModelConfig> {
        let base = |dim, hidden, layers, heads, kv, vocab, seq| ModelConfig {
            dim,
            hidden_dim: hidden,
            n_layers: layers,
            n_heads: heads,
            n_kv_heads: kv,
            vocab_size: vocab,
            max_seq_len: seq,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tied_embeddings: false,
            qkv_bias: false,
        };
        Some(match name {
            "tiny" => ModelConfig {
                tied_embeddings: true,
                ..base(64, 176, 2, 4, 2, 512, 256)
            },
            "stories260k" => ModelConfig {
                tied_embeddings: true,
                ..base(64, 172, 5, 8, 4, 512, 512)
            },
            "stories15m" => base(288, 768, 6, 6, 6, 32000, 256),
            "stories110m" => base(768, 2048, 12, 12, 12, 32000, 1024),
            "smollm2-135m" => ModelConfig {
                rope_theta: 100000.0,
                tied_embeddings: true,
                ..base(576, 1536, 30, 9, 3, 49152, 8192)
            },
            _ => return None,
        })
    }

    pub const PRESETS: &'static [&'static str] = &[
        "tiny",
        "stories260k",
        "stories15m",
        "stories110m",
        "smollm2-135m",
    ];

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Checks every field; call before allocating anything sized by this config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check("dim", self.dim, MAX_DIM)?;
        check("hidden_dim", self.hidden_dim, MAX_HIDDEN)?;
        check("n_layers", self.n_layers, MAX_LAYERS)?;
        check("n_heads", self.n_heads, MAX_HEADS)?;
        check("n_kv_heads", self.n_kv_heads, MAX_HEADS)?;
        check("vocab_size", self.vocab_size, MAX_VOCAB)?;
        check("max_seq_len", self.max_seq_len, MAX_SEQ)?;
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(ConfigError::Invalid {
                field: "n_heads",
                value: self.n_heads.to_string(),
                rule: "a divisor of dim",
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ConfigError::Invalid {
                field: "n_heads",
                value: self.n_heads.to_string(),
                rule: "such that dim / n_heads is even (rotary embeddings pair dimensions)",
            });
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ConfigError::Invalid {
                field: "n_kv_heads",
                value: self.n_kv_heads.to_string(),
                rule: "a divisor of n_heads",
            });
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(ConfigError::Invalid {
                field: "rope_theta",
                value: self.rope_theta.to_string(),
                rule: "a finite number above 1",
            });
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(ConfigError::Invalid {
                field: "norm_eps",
                value: self.norm_eps.to_string(),
                rule: "a finite number in (0, 1)",
            });
        }
        self.checked_param_count().ok_or(ConfigError::Overflow)?;
        Ok(())
    }

    /// Parameter count, or None when it overflows.
    pub fn checked_param_count(&self) -> Option<usize> {
        let d = self.dim;
        let kv = self.n_kv_heads.checked_mul(self.head_dim())?;
        let attn = d
            .checked_mul(d)?
            .checked_mul(2)?
            .checked_add(d.checked_mul(kv)?.checked_mul(2)?)?;
        let bias = if self.qkv_bias { d + 2 * kv } else { 0 };
        let mlp = d.checked_mul(self.hidden_dim)?.checked_mul(3)?;
        let layer = attn
            .checked_add(mlp)?
            .checked_add(2 * d)?
            .checked_add(bias)?;
        let layers = layer.checked_mul(self.n_layers)?;
        let embed = self.vocab_size.checked_mul(d)?;
        let classifier = if self.tied_embeddings { 0 } else { embed };
        layers
            .checked_add(embed)?
            .checked_add(classifier)?
            .checked_add(d)
    }

    pub fn param_count(&self) -> usize {
        self.checked_param_count().unwrap_or(usize::MAX)
    }

    /// Parameters of every matrix used in a matmul, the classifier counted once
    /// (the "P" of the MFU formula: 6*P + 6*L*T*d FLOPs per trained token).
    pub fn matmul_param_count(&self) -> usize {
        let d = self.dim;
        let kv = self.kv_dim();
        let layer = 2 * d * d + 2 * d * kv + 3 * d * self.hidden_dim;
        self.n_layers * layer + self.vocab_size * d
    }

    /// Fails when `bytes` would not fit in the memory this machine has available.
    pub fn check_fits_in_memory(bytes: u64) -> Result<(), ConfigError> {
        if let Some(available) = available_memory_bytes() {
            if bytes > available {
                return Err(ConfigError::TooLarge {
                    needed_mib: bytes >> 20,
                    available_mib: available >> 20,
                });
            }
        }
        Ok(())
    }
}

/// MemAvailable from /proc/meminfo (None where that file does not exist).
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in ModelConfig::PRESETS {
            ModelConfig::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn smollm2_has_135m_params() {
        let c = ModelConfig::preset("smollm2-135m").unwrap();
        assert_eq!(c.param_count(), 134_515_008);
    }

    #[test]
    fn rejects_bad_shapes() {
        let good = ModelConfig::preset("tiny").unwrap();
        let bad = |f: fn(&mut ModelConfig)| {
            let mut c = good.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.dim = 0),
            ConfigError::Invalid { field: "dim", .. }
        ));
        assert!(matches!(
            bad(|c| c.n_heads = 3),
            ConfigError::Invalid {
                field: "n_heads",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.n_kv_heads = 3),
            ConfigError::Invalid {
                field: "n_kv_heads",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.vocab_size = usize::MAX),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(
            bad(|c| c.rope_theta = f64::NAN),
            ConfigError::Invalid {
                field: "rope_theta",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.norm_eps = 0.0),
            ConfigError::Invalid {
                field: "norm_eps",
                ..
            }
        ));
    }
}
