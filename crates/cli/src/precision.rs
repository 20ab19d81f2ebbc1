//! `--precision auto|f32|bf16` of `train`, `bench` and `eval`: the operand precision of the
//! matrix products. BF16 rounds both operands of every product of forward and backward to
//! BF16 and sums in f32 (AVX-512 BF16, twice the f32 multiply-add rate); everything else —
//! the residual stream, norms, softmax, the loss, gradient sums, AdamW and the master
//! weights in checkpoints — stays f32. `auto` takes BF16 where the CPU has it.

use crate::output::Coded;
use engine::gemm::{bf16_available, set_precision, Precision};

/// The values of `--precision`.
pub const CHOICES: [&str; 3] = ["auto", "f32", "bf16"];

const NO_BF16: &str = "--precision is bf16, but this CPU has no AVX-512 BF16 (the BF16 \
    products need it): use --precision f32, or auto to take BF16 only where it exists";

/// Sets the products' precision from a `--precision` value; returns what runs and why.
pub fn apply(requested: &str) -> anyhow::Result<(Precision, String)> {
    let (p, why) = match (requested, bf16_available()) {
        ("f32", _) => (Precision::F32, "f32"),
        ("bf16" | "auto", true) => (
            Precision::Bf16,
            "bf16 (BF16 operands on AVX-512 BF16, f32 sums and master weights)",
        ),
        ("auto", false) => (Precision::F32, "f32 (auto: this CPU has no AVX-512 BF16)"),
        ("bf16", false) => return Err(usage(NO_BF16.into())),
        (other, _) => {
            return Err(usage(format!(
                "--precision is {other:?}, must be one of: auto, f32, bf16"
            )))
        }
    };
    set_precision(p)?;
    Ok((p, why.to_string()))
}

fn usage(message: String) -> anyhow::Error {
    Coded::new(
        "invalid_argument",
        crate::trainer::config::EXIT_USAGE,
        message,
    )
    .into()
}

/// The name `init` and the logs give a precision.
pub fn name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    }
}
