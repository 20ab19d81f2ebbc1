//! GEMM throughput on the shapes of a training step (stories260k at 32x256, the classifier
//! chunk, smollm2-135m and stories15m), f32 and BF16 operands side by side:
//! `cargo run --release -p engine --example gemm_shapes -- 2 [s110m|smol|lora]`.

use engine::gemm::Precision;
use std::time::Instant;
fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    engine::threads::set_threads(threads).unwrap();
    // (ta, tb, m, n, k, what)
    let s110m = [
        (false, true, 1024, 768, 768, "s110m fwd qkvo"),
        (false, true, 1024, 2048, 768, "s110m fwd gate/up"),
        (false, true, 1024, 768, 2048, "s110m fwd down"),
        (false, false, 1024, 768, 768, "s110m dx qkvo"),
        (false, false, 1024, 768, 2048, "s110m dx gate/up"),
        (false, false, 1024, 2048, 768, "s110m dx down"),
        (true, false, 768, 768, 1024, "s110m dW qkvo"),
        (true, false, 2048, 768, 1024, "s110m dW gate/up"),
        (true, false, 768, 2048, 1024, "s110m dW down"),
        (false, true, 256, 32000, 768, "s110m logits"),
        (false, false, 256, 768, 32000, "s110m cls dx"),
        (true, false, 32000, 768, 256, "s110m cls dW"),
    ];
    let smol = [
        (false, true, 1024, 576, 576, "smol fwd q/o"),
        (false, true, 1024, 192, 576, "smol fwd k/v"),
        (false, true, 1024, 960, 576, "smol fwd qkv fused"),
        (false, false, 1024, 576, 576, "smol dx q/o"),
        (false, false, 1024, 576, 192, "smol dx k/v"),
        (false, false, 1024, 576, 960, "smol dx qkv fused"),
        (true, false, 576, 576, 1024, "smol dW q/o"),
        (true, false, 192, 576, 1024, "smol dW k/v"),
        (true, false, 960, 576, 1024, "smol dW qkv fused"),
        (false, true, 1024, 1536, 576, "smol fwd gate/up"),
        (false, true, 1024, 576, 1536, "smol fwd down"),
        (false, false, 1024, 576, 1536, "smol dx gate/up"),
        (false, false, 1024, 1536, 576, "smol dx down"),
        (false, true, 320, 49152, 576, "smol logits"),
        (false, false, 320, 576, 49152, "smol cls dx"),
    ];
    let lora = [
        (false, true, 1024, 8, 576, "lora x A^T"),
        (false, true, 1024, 576, 8, "lora mid B^T q/o"),
        (false, true, 1024, 192, 8, "lora mid B^T k/v"),
        (true, false, 576, 8, 1024, "lora dB q/o"),
        (false, false, 1024, 8, 576, "lora dmid q/o"),
        (true, false, 8, 576, 1024, "lora dA"),
        (false, false, 1024, 576, 8, "lora dx"),
        (false, false, 576, 576, 8, "lora merge B A"),
        (false, true, 8, 1024, 576, "lora (x A^T)^T"),
        (true, true, 8, 1024, 576, "lora dmid^T"),
        (true, false, 8, 576, 1024, "lora dB^T"),
    ];
    let all = [
        (false, true, 8192, 64, 64, "fwd q/o x W^T"),
        (false, true, 8192, 172, 64, "fwd gate/up"),
        (false, true, 8192, 64, 172, "fwd down"),
        (false, false, 8192, 64, 172, "bwd dx gate/up"),
        (false, false, 8192, 172, 64, "bwd dh"),
        (false, false, 8192, 64, 64, "bwd dx q/o"),
        (true, false, 64, 64, 8192, "dW q/o"),
        (true, false, 172, 64, 8192, "dW gate/up"),
        (true, false, 64, 172, 8192, "dW down"),
        (false, true, 256, 512, 64, "cls logits chunk"),
        (false, false, 256, 64, 512, "cls dx chunk"),
        (true, false, 512, 64, 256, "cls dW chunk"),
        (false, false, 1024, 1024, 1024, "square 1024"),
        (false, true, 1024, 1536, 576, "smollm2 mlp fwd"),
        (true, false, 1536, 576, 1024, "smollm2 dW mlp"),
        (false, true, 256, 49152, 576, "smollm2 logits"),
        (false, false, 256, 576, 49152, "smollm2 cls dx"),
        (true, false, 49152, 576, 256, "smollm2 cls dW"),
        (false, true, 2048, 768, 288, "s15m mlp fwd"),
        (true, false, 288, 288, 2048, "s15m dW"),
    ];
    let shapes: &[_] = match std::env::args().nth(2).as_deref() {
        Some("s110m") => &s110m,
        Some("lora") => &lora,
        Some("smol") => &smol,
        _ => &all,
    };
    for &(ta, tb, m, n, k, what) in shapes {
        let a = vec![0.01f32; m * k];
        let b = vec![0.01f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        // f32 and BF16 operands side by side (BF16 where the CPU has AVX-512 BF16).
        let mut line = format!("{what:18} {m}x{n}x{k}:");
        for p in [Precision::F32, Precision::Bf16] {
            if p == Precision::Bf16 && !engine::gemm::bf16_available() {
                continue;
            }
            let mut best = f64::MAX;
            for _ in 0..20 {
                let s = Instant::now();
                engine::gemm::sgemm_in(p, ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 1.0, &mut c, n);
                best = best.min(s.elapsed().as_secs_f64());
            }
            line += &format!(
                "  {p:?} {:.3} ms {:.1} GFLOP/s",
                best * 1e3,
                2.0 * (m * n * k) as f64 / best / 1e9
            );
        }
        println!("{line}");
    }
}
