//! F32 / F16 / BF16 weight matrices on f32 arithmetic (inference only): decode through
//! multi-row SIMD matrix-vector kernels ([`super::x86_float`]) on the decode team; prefill
//! over weight rows widened to f32 on the fly into a reused per-thread buffer (so memory
//! stays near the file size): on AVX2 our own register tiles over transposed strips
//! ([`super::x86_strip`]), on AVX-512 the f32 GEMM over panels of a few hundred rows (or
//! BF16 dot products, [`super::x86_bf16dot`]).
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

/// Bytes of one widened f32 panel: fits L2 next to the packed activations.
const PANEL_BYTES: usize = 512 * 1024;

/// Depth from which the AVX-512 route widens 16 rows per panel instead of [`PANEL_BYTES`].
const DEEP_ROWS: usize = 1024;

/// Fewest activation rows for the GEMM route (below it the row kernels win).
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

/// Row bytes of `t` (float) widened into `dst` (f32 values).
fn widen_with(level: Level, t: QType, src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::x86_float as xf;
        // SAFETY: as in `rows_with`; the kernels check the lengths.
        unsafe {
            match (level, t) {
                (Level::Avx512Vnni, QType::F32) => xf::widen512::<0>(src, dst),
                (Level::Avx512Vnni, QType::F16) => xf::widen512::<1>(src, dst),
                (Level::Avx512Vnni, QType::BF16) => xf::widen512::<2>(src, dst),
                (Level::Avx2, QType::F32) => xf::widen256::<0>(src, dst),
                (Level::Avx2, QType::F16) => xf::widen256::<1>(src, dst),
                (Level::Avx2, QType::BF16) => xf::widen256::<2>(src, dst),
                _ => super::dequantize_row(t, src, dst),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    super::dequantize_row(t, src, dst)
}

thread_local! {
    /// The widened panel (or strip) of each thread, reused across products.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c[m, n] = x[m, k] · wᵀ` when `w` is a float matrix, `m` at least a few rows and `level`
/// has SIMD (AVX2: [`strips`]; AVX-512: the f32 GEMM over widened panels, or BF16 dot
/// products); returns false (nothing written) otherwise.
pub fn matmul_bt_with(level: Level, x: &[f32], w: &QMatrix, c: &mut [f32], m: usize) -> bool {
    let t = w.qtype();
    if kind(t).is_none() || !level.has_avx2() || m < MIN_GEMM_ROWS {
        return false;
    }
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    let threads = rayon::current_num_threads();
    // Whole output columns per piece, as `infer::kernels::matmul_bt` splits f32 prefill.
    let pieces = if threads > 1 {
        (threads * 4).min(n.div_ceil(32)).max(1)
    } else {
        1
    };
    let width = n.div_ceil(pieces);
    let count = n.div_ceil(width);
    #[cfg(target_arch = "x86_64")]
    if bf16_dot_takes(level, t, k) {
        bf16_dot(x, w, c, m, width, count);
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        strips(x, w, c, m, threads);
        return true;
    }
    // Deep rows in narrow panels: on Zen 4 (2 threads) SmolLM2's 1536-deep down projection
    // ran at 150-175 GFLOP/s in 16-row panels against 103-110 in 85-row ones, while the
    // 576-deep shapes lost 5-20 % in small panels (docs/performance-generate.md).
    let panel_rows = if k >= DEEP_ROWS {
        16
    } else {
        (PANEL_BYTES / (4 * k)).clamp(16, 256)
    };
    let rb = w.row_bytes();
    let c_addr = c.as_mut_ptr() as usize;
    let piece = |p: usize| {
        let j0 = p * width;
        let j1 = (j0 + width).min(n);
        PANEL.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut s = j0;
            while s < j1 {
                let rows = panel_rows.min(j1 - s);
                buf.resize(panel_rows.max(rows) * k, 0.0);
                let panel = &mut buf[..rows * k];
                for (r, dst) in panel.chunks_exact_mut(k).enumerate() {
                    widen_with(level, t, &w.bytes()[(s + r) * rb..(s + r + 1) * rb], dst);
                }
                // SAFETY: x is [m, k] and c [m, n] (checked above), the panel [rows, k]; this
                // call writes columns s..s+rows of c only, inside this piece's j0..j1, which
                // no other piece writes.
                unsafe {
                    gemm::gemm(
                        m,
                        rows,
                        k,
                        (c_addr as *mut f32).add(s),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        panel.as_ptr(),
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
                s += rows;
            }
        });
    };
    run_pieces(count, piece);
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

/// `c = x · wᵀ` for BF16 `w` through [`super::x86_bf16dot`]: `x` rounded to BF16 once, then
/// `count` pieces of `width` output columns each.
#[cfg(target_arch = "x86_64")]
fn bf16_dot(x: &[f32], w: &QMatrix, c: &mut [f32], m: usize, width: usize, count: usize) {
    use super::x86_bf16dot as bd;
    let (n, k) = (w.rows(), w.cols());
    let mut xb = vec![0u16; m * k];
    // SAFETY: `bf16_dot_takes` checked AVX-512 BF16 and k % 32 == 0.
    unsafe { bd::round_to_bf16(x, &mut xb) };
    let c_addr = c.as_mut_ptr() as usize;
    run_pieces(count, |p| {
        let j0 = p * width;
        let j1 = (j0 + width).min(n);
        // SAFETY: shapes checked by the caller (x [m, k], c [m, n], w BF16 [n, k]); each
        // piece writes its own columns j0..j1 only.
        unsafe { bd::matmul_bt_columns(&xb, w.bytes(), m, n, k, c_addr as *mut f32, j0..j1) };
    });
}

/// `c = x · wᵀ` on AVX2 through [`super::x86_strip`]: pieces of whole 16-column strips.
/// On a Zen 3, one thread, SmolLM2's layer shapes ran at 84 GFLOP/s against 72–75 through
/// the gemm crate (docs/performance-generate.md).
#[cfg(target_arch = "x86_64")]
fn strips(x: &[f32], w: &QMatrix, c: &mut [f32], m: usize, threads: usize) {
    use super::x86_strip as xs;
    let (n, k) = (w.rows(), w.cols());
    let strips = n.div_ceil(xs::STRIP);
    let pieces = if threads > 1 {
        (threads * 4).min(strips)
    } else {
        1
    };
    let width = strips.div_ceil(pieces) * xs::STRIP;
    let c_addr = c.as_mut_ptr() as usize;
    let run = |p: usize| {
        let j0 = p * width;
        let j1 = (j0 + width).min(n);
        PANEL.with(|buf| {
            let mut buf = buf.borrow_mut();
            // 64-byte aligned, so each depth of the strip is one cache line.
            let need = xs::panel_len(k) + 16;
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
                match w.qtype() {
                    QType::F32 => {
                        xs::matmul_bt_columns::<0>(x, w.bytes(), m, n, k, c, j0..j1, strip)
                    }
                    QType::F16 => {
                        xs::matmul_bt_columns::<1>(x, w.bytes(), m, n, k, c, j0..j1, strip)
                    }
                    _ => xs::matmul_bt_columns::<2>(x, w.bytes(), m, n, k, c, j0..j1, strip),
                }
            }
        });
    };
    run_pieces(n.div_ceil(width), run);
}
