//! F32 / F16 / BF16 weight matrices on f32 arithmetic (inference only): decode through
//! multi-row SIMD matrix-vector kernels ([`super::x86_float`]) on the decode team; prefill
//! over weight rows widened to f32 on the fly into a reused per-thread buffer (so memory
//! stays near the file size): our own register tiles over transposed strips
//! ([`super::x86_strip`]; 6 × 16 on AVX2, 12 × 32 on AVX-512), or for BF16 on AVX-512 BF16
//! the same tiles over strips of BF16 pairs with `vdpbf16ps` ([`super::x86_bf16dot`]).
//!
//! Both are routes of [`super::qmatvec_many`] / [`super::qmatmul_bt`]; the `_with` forms keep
//! the row-dot reference. Results match the dequantize-then-f32 product within f32 rounding
//! (not bit for bit: the association differs), and depend only on the shapes and the thread
//! count, never on scheduling.

use super::dot::Level;
use super::matmul::QMatVec;
use super::{QMatrix, QType};
use std::cell::RefCell;

/// Weight bytes one decode task streams, at most: each matrix splits into a multiple of the
/// thread count of such tasks, so every thread gets long contiguous streams in equal shares.
/// On Zen 4 (2 threads, 5 alternating pairs), SmolLM2 F16 decode ran at 95–105 tok/s this
/// way against 78–96 with fixed 64 KiB tasks (the prefetcher restarts at every task start).
const TASK_BYTES: usize = 256 * 1024;

/// Fewest activation rows for the strip tiles (below it the row kernels win).
const MIN_GEMM_ROWS: usize = 8;

/// The kernel kind of a float type (0 = F32, 1 = F16, 2 = BF16), `None` for block types.
fn kind(t: QType) -> Option<u8> {
    match t {
        QType::F32 => Some(0),
        QType::F16 => Some(1),
        QType::BF16 => Some(2),
        _ => None,
    }
}

/// Whether [`matvec_many`] takes these jobs at `level`: every matrix a float type, a SIMD
/// level present.
pub fn takes_matvec(level: Level, jobs: &[QMatVec<'_>]) -> bool {
    cfg!(target_arch = "x86_64")
        && level.has_avx2()
        && !jobs.is_empty()
        && jobs.iter().all(|j| kind(j.w.qtype()).is_some())
}

/// `out = w · x` for every job (float matrices, checked by [`takes_matvec`]) in one region of
/// the decode team.
///
/// Panics if a shape disagrees or the jobs are not float matrices (callers check both).
pub fn matvec_many(level: Level, x: &[f32], jobs: Vec<QMatVec<'_>>) {
    assert!(takes_matvec(level, &jobs), "float matvec: unsupported jobs");
    let cols = x.len();
    let threads = rayon::current_num_threads().max(1);
    let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
    for job in jobs {
        assert_eq!(
            job.w.cols(),
            cols,
            "matvec: {:?} does not take {cols} inputs",
            job.w
        );
        assert_eq!(
            job.w.rows(),
            job.out.len(),
            "matvec: {:?} has another output size",
            job.w
        );
        let bytes = job.out.len() * job.w.row_bytes();
        let pieces = threads * bytes.div_ceil(threads * TASK_BYTES).max(1);
        let rows = job.out.len().div_ceil(pieces).max(1);
        for (i, out) in job.out.chunks_mut(rows).enumerate() {
            tasks.push((job.w, i * rows, out));
        }
    }
    crate::team::for_each_mut(&mut tasks, |(w, r0, out)| {
        let rb = w.row_bytes();
        let bytes = &w.bytes()[*r0 * rb..(*r0 + out.len()) * rb];
        rows_with(level, w.qtype(), bytes, x, out);
    });
}

/// `out[r]` = row `r` of `w` (float bytes of `t`, `[out.len(), x.len()]`) · `x`.
fn rows_with(level: Level, t: QType, w: &[u8], x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::x86_float as xf;
        // SAFETY: `Level::Avx512Vnni` is only detected (or chosen by a test that checked it)
        // on CPUs with AVX-512 F/BW/VL, `Level::Avx2` on CPUs with AVX2, FMA and F16C; the
        // kernels check the byte length against the shape.
        unsafe {
            match (level, t) {
                (Level::Avx512Vnni, QType::F32) => xf::matvec512::<0>(w, x, out),
                (Level::Avx512Vnni, QType::F16) => xf::matvec512::<1>(w, x, out),
                (Level::Avx512Vnni, QType::BF16) => xf::matvec512::<2>(w, x, out),
                (Level::Avx2, QType::F32) => xf::matvec256::<0>(w, x, out),
                (Level::Avx2, QType::F16) => xf::matvec256::<1>(w, x, out),
                (Level::Avx2, QType::BF16) => xf::matvec256::<2>(w, x, out),
                _ => unreachable!("checked by takes_matvec"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "checked by takes_matvec: {level:?} {t:?} {} {} {}",
        w.len(),
        x.len(),
        out.len()
    )
}

thread_local! {
    /// The widened panel (or strip) of each thread, reused across products.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c[m, n] = x[m, k] · wᵀ` when `w` is a float matrix, `m` at least a few rows and `level`
/// has SIMD ([`strips`], or BF16 dot products); returns false (nothing written) otherwise.
pub fn matmul_bt_with(level: Level, x: &[f32], w: &QMatrix, c: &mut [f32], m: usize) -> bool {
    let t = w.qtype();
    if kind(t).is_none() || !level.has_avx2() || m < MIN_GEMM_ROWS {
        return false;
    }
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "x86_64")]
    if bf16_dot_takes(level, t, k) {
        let mut xb = vec![0u16; m * k];
        // SAFETY: `bf16_dot_takes` checked AVX-512 BF16 and k % 32 == 0.
        unsafe { super::x86_bf16dot::round_to_bf16(x, &mut xb) };
        strips_of(level, x, Some(&xb), t, w.bytes(), n, k, c, m, threads);
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    strips(level, x, w, c, m, threads);
    true
}

/// `c[m, n] = x[m, k] · wᵀ` for dense f32 weights `w` `[n, k]` through the strip tiles, when
/// `level` has SIMD and `m` is at least a few rows; returns false (nothing written) otherwise.
pub fn matmul_bt_dense(
    level: Level,
    x: &[f32],
    w: &[f32],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) -> bool {
    if !level.has_avx2() || m < MIN_GEMM_ROWS {
        return false;
    }
    assert_eq!(x.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(w.len(), n * k, "matmul: rhs is not [n, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: any f32 is 4 initialised bytes; the strip kernels read them back as f32 in
        // the machine's (little-endian) order.
        let wb = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 4) };
        let threads = rayon::current_num_threads();
        strips_of(level, x, None, QType::F32, wb, n, k, c, m, threads);
    }
    true
}

/// `piece(0..count)` on the engine's thread team (see [`crate::team`]: rayon parks its idle
/// workers between the regions of a prefill, and waking them cost SmolLM2 F16 prefill 15 %).
fn run_pieces(count: usize, piece: impl Fn(usize) + Sync + Send) {
    crate::team::for_each_index(count, piece);
}

/// Whether a BF16 product of `k` columns at `level` takes the `vdpbf16ps` route, which
/// rounds the activations to BF16 (its results then err by up to 2⁻⁸ · Σ|x·w|): the CPU has
/// AVX-512 BF16 and rows are whole 32-element steps. On a Zen 5 it took SmolLM2 BF16 prefill
/// from 1139 to 1267–1434 tok/s (docs/performance-generate.md).
pub fn bf16_dot_takes(level: Level, t: QType, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        t == QType::BF16
            && level == Level::Avx512Vnni
            && k.is_multiple_of(32)
            && super::x86_bf16dot::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, t, k);
        false
    }
}

/// `c = x · wᵀ` through [`super::x86_strip`]: pieces of whole tiles' strips (one 16-column
/// strip on AVX2, two on AVX-512). On Zen 4 (2 threads) the AVX-512 tiles ran SmolLM2's F16
/// layer shapes at 188–202 GFLOP/s against 151–167 for the GEMM crate over widened panels,
/// which ran 16-row panels in 1 × 6 register tiles; on a Zen 3 (one thread) the AVX2 tiles
/// ran them at 84 GFLOP/s against 72–75 (docs/performance-generate.md).
#[cfg(target_arch = "x86_64")]
fn strips(level: Level, x: &[f32], w: &QMatrix, c: &mut [f32], m: usize, threads: usize) {
    let (n, k) = (w.rows(), w.cols());
    strips_of(level, x, None, w.qtype(), w.bytes(), n, k, c, m, threads)
}

/// [`strips`] over the row bytes `wb` of an `[n, k]` matrix of float type `t`; with `xb` (the
/// activations rounded to BF16, for BF16 weights on AVX-512 BF16) the BF16 pair tiles of
/// [`super::x86_bf16dot`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn strips_of(
    level: Level,
    x: &[f32],
    xb: Option<&[u16]>,
    t: QType,
    wb: &[u8],
    n: usize,
    k: usize,
    c: &mut [f32],
    m: usize,
    threads: usize,
) {
    use super::x86_strip as xs;
    let wide = level == Level::Avx512Vnni;
    // Pieces of whole tiles: pairs of strips on AVX-512.
    let unit = if wide { 2 * xs::STRIP } else { xs::STRIP };
    let strips = n.div_ceil(unit);
    let pieces = if threads > 1 {
        (threads * 4).min(strips)
    } else {
        1
    };
    let width = strips.div_ceil(pieces) * unit;
    let c_addr = c.as_mut_ptr() as usize;
    let run = |p: usize| {
        let j0 = p * width;
        let j1 = (j0 + width).min(n);
        PANEL.with(|buf| {
            let mut buf = buf.borrow_mut();
            // 64-byte aligned, so each depth of the strip is one cache line.
            let need = xs::panel_len(k).max(super::x86_bf16dot::panel_len(k)) + 16;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            let skip = buf.as_ptr().align_offset(64).min(16);
            let strip = &mut buf[skip..need];
            // SAFETY: the level check of the caller found AVX2, FMA and F16C; x is [m, k],
            // c [m, n], w [n, k] (checked by the caller); this piece alone writes columns
            // j0..j1.
            unsafe {
                let c = c_addr as *mut f32;
                let cols = j0..j1;
                if let Some(xb) = xb {
                    // The f32 scratch as 32-bit words (same size and alignment).
                    let words =
                        std::slice::from_raw_parts_mut(strip.as_mut_ptr() as *mut u32, strip.len());
                    super::x86_bf16dot::matmul_bt_columns(xb, wb, m, n, k, c, cols, words);
                    return;
                }
                match (wide, t) {
                    (true, QType::F32) => {
                        xs::matmul_bt_columns512::<0>(x, wb, m, n, k, c, cols, strip)
                    }
                    (true, QType::F16) => {
                        xs::matmul_bt_columns512::<1>(x, wb, m, n, k, c, cols, strip)
                    }
                    (true, _) => xs::matmul_bt_columns512::<2>(x, wb, m, n, k, c, cols, strip),
                    (false, QType::F32) => {
                        xs::matmul_bt_columns::<0>(x, wb, m, n, k, c, cols, strip)
                    }
                    (false, QType::F16) => {
                        xs::matmul_bt_columns::<1>(x, wb, m, n, k, c, cols, strip)
                    }
                    (false, _) => xs::matmul_bt_columns::<2>(x, wb, m, n, k, c, cols, strip),
                }
            }
        });
    };
    run_pieces(n.div_ceil(width), run);
}
