//! Yardsticks for generation speed: the memory read bandwidth this machine sustains (measured
//! with the decode kernel itself, over a buffer larger than the caches are likely to hold),
//! and the bytes of weights one decoded token has to read.

use super::kernels;
use super::weights::Weights;
use crate::config::ModelConfig;
use std::time::Instant;

/// Bytes of f32 weights read to decode one token: every matrix once, the classifier once
/// (the embedding row lookup is negligible; tied or not, the classifier is read in full).
pub fn weight_bytes_per_token(cfg: &ModelConfig) -> u64 {
    let d = cfg.dim as u64;
    let kv = cfg.kv_dim() as u64;
    let h = cfg.hidden_dim as u64;
    let per_layer = 2 * d * d + 2 * d * kv + 3 * d * h + 2 * d;
    let bias = if cfg.qkv_bias { d + 2 * kv } else { 0 };
    4 * (cfg.n_layers as u64 * (per_layer + bias) + cfg.vocab_size as u64 * d + d)
}

/// Read bandwidth in bytes/s: the multithreaded matrix-vector kernel streaming a `bytes`-sized
/// matrix (rounded down to whole rows) for at least `min_seconds`, best pass reported.
pub fn measure_read_bandwidth(bytes: usize, min_seconds: f64) -> f64 {
    // Non-zero contents: a zero page could be deduplicated by the OS and never touch DRAM.
    let w: Vec<f32> = (0..(bytes / 4).max(1))
        .map(|i| (i % 7) as f32 * 0.25)
        .collect();
    measure_read_bandwidth_of(&w, min_seconds)
}

/// Read bandwidth in bytes/s over `data` itself (e.g. a model's weights: the same memory, pages
/// and cache state that decoding reads), streamed by the decode kernel as `[rows, 576]`.
pub fn measure_read_bandwidth_of(data: &[f32], min_seconds: f64) -> f64 {
    const COLS: usize = 576;
    let rows = (data.len() / COLS).max(1);
    let w = &data[..(rows * COLS).min(data.len())];
    let cols = w.len() / rows;
    let x = vec![1.0f32; cols];
    let mut out = vec![0.0f32; rows];
    kernels::matvec(w, &x, &mut out); // warm-up: page faults and thread start-up
    let start = Instant::now();
    let mut best = 0.0f64;
    loop {
        let t = Instant::now();
        kernels::matvec(w, &x, &mut out);
        let secs = t.elapsed().as_secs_f64();
        best = best.max((w.len() * 4) as f64 / secs);
        if start.elapsed().as_secs_f64() >= min_seconds {
            break;
        }
    }
    std::hint::black_box(&out);
    best
}

/// Read bandwidth in bytes/s over the weights a session reads: the f32 parameters, or the
/// block bytes of every quantized matrix (viewed as f32 words: only the bytes streamed
/// matter), streamed by the decode kernel.
pub fn measure_read_bandwidth_of_weights(weights: Weights<'_>, min_seconds: f64) -> f64 {
    match weights {
        Weights::Dense(p) => measure_read_bandwidth_of(&p.data, min_seconds),
        Weights::Quant(m) => {
            // Every matrix's block bytes in ~256 KiB pieces, summed as u64 words over the
            // engine's threads in one region: a pure read stream, so the figure is the memory
            // bandwidth and not the speed of some kernel (an f32 matvec over 64-wide rows,
            // used before, read slower than the quantized decode itself).
            const PIECE: usize = 256 * 1024;
            let mats = m.matrices();
            let pieces: Vec<&[u8]> = mats.iter().flat_map(|q| q.bytes().chunks(PIECE)).collect();
            let total: usize = pieces.iter().map(|p| p.len()).sum();
            let sums: Vec<std::sync::atomic::AtomicU64> =
                pieces.iter().map(|_| Default::default()).collect();
            let pass = || {
                crate::team::for_each_index(pieces.len(), |i| {
                    sums[i].store(sum_words(pieces[i]), std::sync::atomic::Ordering::Relaxed)
                })
            };
            pass(); // warm-up: page faults and thread start-up
            let start = Instant::now();
            let mut best = 0f64;
            loop {
                let t = Instant::now();
                pass();
                best = best.max(total as f64 / t.elapsed().as_secs_f64());
                if start.elapsed().as_secs_f64() >= min_seconds {
                    break;
                }
            }
            std::hint::black_box(&sums);
            best
        }
    }
}

/// The wrapping sum of `bytes` as little-endian u64 words (tail bytes ignored): every byte
/// is loaded once, in order, with enough independent adds that the loads set the pace.
fn sum_words(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for line in bytes.chunks_exact(64) {
        for (a, w) in acc.iter_mut().zip(line.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            *a = a.wrapping_add(u64::from_le_bytes(b));
        }
    }
    acc.iter().fold(0, |s, &a| s.wrapping_add(a))
}

/// Bytes [`measure_read_bandwidth_of_weights`] streams.
pub fn weights_buffer_bytes(weights: Weights<'_>) -> usize {
    match weights {
        Weights::Dense(p) => p.data.len() * 4,
        Weights::Quant(m) => m.matrices().iter().map(|q| q.bytes().len()).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_weight_bytes() {
        let cfg = ModelConfig::preset("smollm2-135m").unwrap();
        // Every parameter is read once per token (tied: the embedding doubles as classifier).
        assert_eq!(weight_bytes_per_token(&cfg), cfg.param_count() as u64 * 4);
    }

    #[test]
    fn bandwidth_is_positive() {
        assert!(measure_read_bandwidth(1 << 20, 0.0) > 0.0);
    }
}
