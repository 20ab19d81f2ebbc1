//! Inference kernels: the memory-bound f32 matrix-vector product used by decode (AVX-512 /
//! AVX2 chosen at run time, scalar fallback, rows split across the rayon pool), a GEMM wrapper
//! for batched prefill, and the small per-vector operations (RMSNorm, RoPE, softmax, SiLU).

use crate::kernels::rope::RopeTable;

/// Rows handed to one rayon task: big enough that task overhead vanishes next to the bytes
/// streamed (`ROWS_PER_TASK * in_dim * 4` bytes), small enough for both threads to share work.
const ROWS_PER_TASK: usize = 16;

/// The SIMD level this CPU offers, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Avx512,
    Avx2,
    Scalar,
}

impl Simd {
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Scalar => "scalar",
        }
    }
}

fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(Simd::detect)
}

/// `out[r] = dot(w[r*k..(r+1)*k], x)` for every row, single-threaded, with an explicit SIMD
/// level (tests compare levels against each other).
pub fn matvec_rows_with(level: Simd, w: &[f32], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    assert_eq!(w.len(), out.len() * k, "matvec: matrix is not [rows, in]");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level was detected on this CPU (or chosen by a test that checked it).
        Simd::Avx512 => unsafe { x86::matvec_avx512(w, x, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { x86::matvec_avx2(w, x, out) },
        _ => matvec_scalar(w, x, out),
    }
}

fn matvec_scalar(w: &[f32], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
        *o = dot_scalar(row, x);
    }
}

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: the same association as the SIMD kernels, and it vectorises.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Dot product with the best SIMD level of this CPU.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut out = [0f32];
    matvec_rows_with(simd(), a, b, &mut out);
    out[0]
}

/// One matrix-vector product to compute as part of a fused parallel region.
pub struct MatVec<'a> {
    /// `[rows, in]` row-major.
    pub w: &'a [f32],
    pub x: &'a [f32],
    pub out: &'a mut [f32],
}

/// Runs several independent matrix-vector products in one parallel region (q/k/v, gate/up):
/// one fork-join instead of several, and the pool stays busy across the small ones.
pub fn matvec_many(jobs: Vec<MatVec<'_>>) {
    let level = simd();
    let mut tasks: Vec<(&[f32], &[f32], &mut [f32])> = Vec::new();
    for job in jobs {
        let k = job.x.len();
        assert_eq!(
            job.w.len(),
            job.out.len() * k,
            "matvec: matrix is not [rows, in]"
        );
        if k == 0 {
            job.out.fill(0.0);
            continue;
        }
        for (w, out) in job
            .w
            .chunks(ROWS_PER_TASK * k)
            .zip(job.out.chunks_mut(ROWS_PER_TASK))
        {
            tasks.push((w, job.x, out));
        }
    }
    // The decode team (as for the quantized products), so decode never mixes two pools.
    crate::team::for_each_mut(&mut tasks, |(w, x, out)| matvec_rows_with(level, w, x, out));
}

/// `out = w · x` with `w` `[out.len(), x.len()]` row-major, multithreaded.
pub fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    matvec_many(vec![MatVec { w, x, out }]);
}

/// `c[m, n] = a[m, k] · bᵀ` where `b` is `[n, k]` row-major (a weight matrix): the prefill
/// projection of `m` token rows at once: the float strip tiles of [`crate::quant::float`] on
/// AVX2 / AVX-512 from 8 rows on (on Zen 4 SmolLM2 `--dequantize` prefill went from 371–585
/// to 559–713 tok/s), otherwise the gemm crate.
pub fn matmul_bt(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(a.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(b.len(), n * k, "matmul: rhs is not [n, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    if crate::quant::float::matmul_bt_dense(crate::quant::dot::level(), a, b, c, m, n, k) {
        return;
    }
    let threads = rayon::current_num_threads();
    // Prefill products are short and wide (m = prompt rows, n = a weight's outputs): pieces of
    // whole output columns, one single-threaded product each, keep both cores busier than the
    // gemm crate's own split of such shapes (measured on SmolLM2 prefill).
    let pieces = if threads > 1 {
        (threads * 4).min(n.div_ceil(32)).max(1)
    } else {
        1
    };
    let width = n.div_ceil(pieces);
    let c_addr = c.as_mut_ptr() as usize;
    crate::team::for_each_index(n.div_ceil(width), |p| {
        let j0 = p * width;
        let cols = width.min(n - j0);
        // SAFETY: the buffers have exactly the sizes the strides describe (checked above);
        // piece p writes only columns j0..j0+cols of c, disjoint from every other piece, and
        // reads rows j0..j0+cols of b.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                (c_addr as *mut f32).add(j0),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr().add(j0 * k),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// RMSNorm as Hugging Face computes it: `w * x / sqrt(mean(x²) + eps)`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss = dot(x, x) / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = wi * (xi * inv);
    }
}

// The cos/sin tables are the training kernel's (`kernels::rope::RopeTable`, identical angles);
// inference adds rotation of one position at a time.
impl RopeTable {
    /// Rotates every head of `x` (`n_heads * head_dim` values) for position `pos`, pairing
    /// dimension `i` with `i + head_dim/2` ("rotate half").
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.half;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    use crate::kernels::simd;
    if x.is_empty() {
        return;
    }
    // The training kernels' vectorised max, exp and sums (no libm call per score).
    let max = simd::max(x);
    let inv = 1.0 / simd::exp_sub_sum(x, max);
    simd::scale(x, inv);
}

/// `gate = silu(gate) * up`, the SwiGLU activation: the training kernel's vectorised exp and
/// operations, so inference and the training forward agree bit for bit.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    crate::kernels::simd::swiglu_in_place(gate, up);
}

/// `acc += x`.
pub fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `out[r] = w[r] . x` for one instruction set, from one body: one row at a time (one
    /// sequential stream per thread: on Zen 4 SmolLM2's f32 decode ran at 46–51 tok/s where
    /// four rows sharing each load of `x` ran at 39–42), two accumulators hide FMA latency. `$lanes` floats per
    /// vector; `$hsum` adds a vector's lanes.
    macro_rules! matvec {
        ($name:ident, $feature:literal, $lanes:expr, $zero:ident, $load:ident, $fmadd:ident,
         $add:ident, $hsum:ident) => {
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(w: &[f32], x: &[f32], out: &mut [f32]) {
                const L: usize = $lanes;
                let k = x.len();
                let rows = out.len();
                let xp = x.as_ptr();
                let wp = w.as_ptr();
                let body = k / (2 * L) * (2 * L);
                for r in 0..rows {
                    let p = wp.add(r * k);
                    let (mut a0, mut a1) = ($zero(), $zero());
                    let mut i = 0;
                    while i < body {
                        a0 = $fmadd($load(p.add(i)), $load(xp.add(i)), a0);
                        a1 = $fmadd($load(p.add(i + L)), $load(xp.add(i + L)), a1);
                        i += 2 * L;
                    }
                    let mut s = $hsum($add(a0, a1));
                    for t in body..k {
                        s += *p.add(t) * *xp.add(t);
                    }
                    out[r] = s;
                }
            }
        };
    }

    matvec!(
        matvec_avx512,
        "avx512f",
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_reduce_add_ps
    );
    matvec!(
        matvec_avx2,
        "avx2,fma",
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        hsum256
    );

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn simd_levels_agree_with_scalar() {
        let levels = [Simd::Scalar, Simd::detect(), Simd::Avx2];
        for &(rows, k) in &[(1, 1), (3, 7), (5, 33), (9, 64), (17, 100)] {
            let w = lcg(rows * k, 1);
            let x = lcg(k, 2);
            let mut want = vec![0f32; rows];
            for r in 0..rows {
                want[r] = (0..k)
                    .map(|i| w[r * k + i] as f64 * x[i] as f64)
                    .sum::<f64>() as f32;
            }
            for &level in &levels {
                if level == Simd::Avx2 && Simd::detect() == Simd::Scalar {
                    continue;
                }
                let mut got = vec![0f32; rows];
                matvec_rows_with(level, &w, &x, &mut got);
                for r in 0..rows {
                    assert!(
                        (got[r] - want[r]).abs() < 1e-4,
                        "{level:?} {rows}x{k} row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_bt_matches_naive() {
        let (m, n, k) = (5, 7, 19);
        let a = lcg(m * k, 3);
        let b = lcg(n * k, 4);
        let mut c = vec![0f32; m * n];
        matmul_bt(&a, &b, &mut c, m, n, k);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
