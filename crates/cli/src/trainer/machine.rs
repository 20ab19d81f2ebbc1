//! What the machine gives a run: its measured matrix-multiply peak (for MFU) and the process's
//! peak resident memory.

use std::time::Instant;

/// The GEMM shape timed for the peak: large enough to run at the kernels' full rate, small
/// enough (2 x 512^3 = 0.27 GFLOP) that the measurement costs a few tens of milliseconds.
const PEAK_N: usize = 512;
const PEAK_REPS: usize = 5;

/// FLOP/s of the engine's own f32 GEMM on this machine with the current rayon pool, best of a
/// few repetitions after a warm-up. MFU is reported against this measured figure rather than a
/// datasheet peak: it says how much of what our kernels can do the whole training step reaches.
pub fn measured_peak_flops() -> f64 {
    let n = PEAK_N;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let mut c = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for rep in 0..=PEAK_REPS {
        let t = Instant::now();
        engine::gemm::sgemm(false, true, n, n, n, 1.0, &a, n, &b, n, 0.0, &mut c, n);
        let secs = t.elapsed().as_secs_f64();
        if rep > 0 {
            best = best.min(secs);
        }
    }
    2.0 * (n * n * n) as f64 / best
}

/// A `kB` field of /proc/self/status (`VmHWM:` peak resident set, `VmRSS:` current), in
/// bytes; `None` where there is no /proc (not Linux).
pub fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The peak resident memory of this process so far.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_a_positive_finite_rate() {
        let p = measured_peak_flops();
        assert!(p.is_finite() && p > 1e8, "peak {p}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_covers_a_touched_buffer() {
        let buf = vec![1u8; 32 << 20];
        let peak = peak_rss_bytes().expect("VmHWM on Linux");
        assert!(peak >= buf.len() as u64, "peak {peak} < {}", buf.len());
        assert_eq!(buf.iter().map(|&x| x as u64).sum::<u64>(), buf.len() as u64);
    }
}
