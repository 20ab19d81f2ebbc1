//! `--precision auto|f32|bf16` of `train`, `bench` and `eval`: the operand precision of the
//! matrix products. BF16 rounds both operands of every product of forward and backward to
//! BF16 and sums in f32 (AVX-512 BF16, twice the f32 multiply-add rate); everything else —
//! the residual stream, norms, softmax, the loss, gradient sums, AdamW and the master
//! weights in checkpoints — stays f32. `auto` takes BF16 where the CPU has it.

use crate::output::Coded;
use engine::gemm::{bf16_available, set_precision, Precision};

/// The values of `--precision`.
pub const CHOICES: [&str; 3] = ["auto", "f32", "bf16"];

/// Sets the products' precision from a `--precision` value; returns what runs and why.
pub fn apply(requested: &str) -> anyhow::Result<(Precision, String)> {
    let has = bf16_available();
    let (p, why) =
        match (requested, has) {
            ("f32", _) => (Precision::F32, "f32".to_string()),
            ("bf16" | "auto", true) => (
                Precision::Bf16,
                "bf16 (BF16 operands on AVX-512 BF16, f32 sums and master weights)".to_string(),
            ),
            ("auto", false) => (
                Precision::F32,
                "f32 (auto: this CPU has no AVX-512 BF16)".to_string(),
            ),
            ("bf16", false) => return Err(Coded::new(
                "invalid_argument",
                crate::trainer::config::EXIT_USAGE,
                "--precision is bf16, but this CPU has no AVX-512 BF16 (the BF16 products need \
                 it): use --precision f32, or auto to take BF16 only where it exists",
            )
            .into()),
            (other, _) => {
                return Err(Coded::new(
                    "invalid_argument",
                    crate::trainer::config::EXIT_USAGE,
                    format!("--precision is {other:?}, must be one of: auto, f32, bf16"),
                )
                .into())
            }
        };
    set_precision(p)?;
    Ok((p, why))
}

/// The name `init` and the logs give a precision.
pub fn name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    }
}
