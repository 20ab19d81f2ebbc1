//! Multithreaded products of quantized matrices with activations quantized once: the
//! matrix-vector product of decode (several matrices sharing one input in one parallel
//! region) and the matrix-matrix product of prefill (each weight row unpacked once per tile of
//! activation rows).

use super::act::QuantizedActs;
use super::dot::{self, dot_group, dot_rows, Level};
use super::packed::GROUP;
use super::{ActKind, QMatrix};

/// Weight bytes one decode task streams, at most: each matrix splits into a multiple of the
/// thread count of such tasks, so every thread reads long contiguous streams in equal shares.
/// On Zen 4 (2 threads, 4 alternating rounds) that decoded SmolLM2 Q8_0 / Q4_0 / Q4_K at
/// 166 / 235 / 178 tok/s against 131 / 187 / 150 with the former fixed 32 KiB tasks (64 and
/// 256 KiB measured the same as 128 within the noise).
const TASK_BYTES: usize = 128 * 1024;

/// Activation rows that meet one unpacked weight row in prefill.
const TILE: usize = 4;

/// Weight rows per prefill task (they stay in L1/L2 while every activation tile passes).
const PREFILL_ROWS: usize = 16;

/// One matrix-vector product of a fused region: `out = w · x` for the region's shared `x`.
pub struct QMatVec<'a> {
    pub w: &'a QMatrix,
    pub out: &'a mut [f32],
}

fn kinds_of<'a>(ws: impl Iterator<Item = &'a QMatrix>) -> Vec<ActKind> {
    let mut kinds = Vec::new();
    for w in ws {
        let k = w.qtype().act_kind();
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// Runs every job on the shared input `x` (quantized once into `acts`, reused across jobs)
/// in one parallel region.
pub fn qmatvec_many(x: &[f32], acts: &mut QuantizedActs, jobs: Vec<QMatVec<'_>>) {
    // F32/F16/BF16 matrices: multi-row f32 kernels (the `_with` form keeps the row dots).
    if super::float::takes_matvec(dot::level(), &jobs) {
        return super::float::matvec_many(dot::level(), x, jobs);
    }
    qmatvec_many_with(dot::level(), x, acts, jobs)
}

/// [`qmatvec_many`] at an explicit kernel level (tests).
pub fn qmatvec_many_with(
    level: Level,
    x: &[f32],
    acts: &mut QuantizedActs,
    jobs: Vec<QMatVec<'_>>,
) {
    let cols = x.len();
    for j in &jobs {
        assert_eq!(
            j.w.cols(),
            cols,
            "matvec: {:?} does not take {cols} inputs",
            j.w
        );
        assert_eq!(
            j.w.rows(),
            j.out.len(),
            "matvec: {:?} has another output size",
            j.w
        );
    }
    acts.prepare(x, 1, cols, &kinds_of(jobs.iter().map(|j| j.w)));
    let acts = &*acts;
    let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
    let threads = rayon::current_num_threads().max(1);
    for job in jobs {
        // A multiple of the thread count of tasks, each whole groups (interleaved groups
        // never straddle two tasks).
        let bytes = job.out.len() * job.w.row_bytes();
        let pieces = threads * bytes.div_ceil(threads * TASK_BYTES).max(1);
        let rows = job.out.len().div_ceil(pieces).div_ceil(GROUP).max(1) * GROUP;
        for (i, out) in job.out.chunks_mut(rows).enumerate() {
            tasks.push((job.w, i * rows, out));
        }
    }
    let run = |task: &mut (&QMatrix, usize, &mut [f32])| {
        let (w, r0, out) = (task.0, task.1, &mut *task.2);
        let t = w.qtype();
        let grouped = w.grouped_rows();
        let mut i = 0;
        while i < out.len() {
            let r = r0 + i;
            if r + GROUP <= grouped {
                let v = dot_group(level, t, w.group(r / GROUP), acts, [0])[0];
                out[i..i + GROUP].copy_from_slice(&v);
                i += GROUP;
            } else {
                out[i] = dot_rows(level, t, w.row(r), x, acts, [0])[0];
                i += 1;
            }
        }
    };
    // Decode regions are tiny: the spinning team starts them far faster than rayon wakes.
    crate::team::for_each_mut(&mut tasks, run);
}

/// `c[m, n] = x[m, k] · wᵀ` for `w` `[n, k]`, with `acts` already prepared from `x` for the
/// form `w` needs (prepare once, reuse for every matrix reading the same rows).
pub fn qmatmul_bt(x: &[f32], acts: &QuantizedActs, w: &QMatrix, c: &mut [f32], m: usize) {
    // The tile unit where it applies (same results as the AVX2 path, bit for bit).
    #[cfg(target_arch = "x86_64")]
    if super::amx_prefill::qmatmul_bt_amx(x, acts, w, c, m) {
        return;
    }
    // The K-quants on the tile unit (same integer sums; f32 order of the scalar reference).
    #[cfg(target_arch = "x86_64")]
    if super::amx_kquant::qmatmul_bt_amx(acts, w, c, m) {
        return;
    }
    // F32/F16/BF16 matrices: the f32 GEMM over panels widened on the fly.
    if super::float::matmul_bt_with(dot::level(), x, w, c, m) {
        return;
    }
    qmatmul_bt_with(dot::level(), x, acts, w, c, m)
}

/// [`qmatmul_bt`] at an explicit kernel level (tests).
pub fn qmatmul_bt_with(
    level: Level,
    x: &[f32],
    acts: &QuantizedActs,
    w: &QMatrix,
    c: &mut [f32],
    m: usize,
) {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    assert!(
        acts.rows >= m && acts.cols == k,
        "matmul: activations not prepared"
    );
    let t = w.qtype();
    // K-quants on AVX-512 VNNI: panels of 16 unpacked rows (the reference's bits, as here).
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512Vnni && super::x86_kqpanel::takes(t) && acts.has(ActKind::Q8K) {
        // SAFETY: `Level::Avx512Vnni` is only detected (or chosen by a test that checked
        // it) on CPUs with AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
        return unsafe { super::x86_kqpanel::matmul_bt(acts, w, c, m) };
    }
    // 32-block types at 16 bits on AVX-512 VNNI: panels of 16 unpacked rows (the group
    // kernels' bits).
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512Vnni && super::x86_q16panel::takes(w, acts) {
        // SAFETY: as above.
        return unsafe { super::x86_q16panel::matmul_bt(acts, w, c, m) };
    }
    let c_addr = c.as_mut_ptr() as usize;
    let task = |p: usize| {
        let j0 = p * PREFILL_ROWS;
        let j1 = (j0 + PREFILL_ROWS).min(n);
        let put = |r: usize, j: usize, v: f32| {
            debug_assert!(r < m && j < n);
            // SAFETY: r < m and j < n, so the index is inside c (length m * n); task p
            // writes only columns j0..j1, disjoint from every other task's.
            unsafe { *(c_addr as *mut f32).add(r * n + j) = v }
        };
        let put8 = |r: usize, j: usize, v: &[f32; GROUP]| {
            assert!(r < m && j + GROUP <= n);
            // SAFETY: in bounds (checked); columns j..j+8 lie inside this task's j0..j1.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    v.as_ptr(),
                    (c_addr as *mut f32).add(r * n + j),
                    GROUP,
                )
            }
        };
        let grouped = w.grouped_rows();
        // Rows of this piece in interleaved groups (the piece starts on a group boundary).
        let g1 = grouped.clamp(j0, j1);
        let mut r = 0;
        while r + TILE <= m {
            let tile = [r, r + 1, r + 2, r + 3];
            for g0 in (j0..g1).step_by(GROUP) {
                let v = dot_group(level, t, w.group(g0 / GROUP), acts, tile);
                for (i, vi) in v.iter().enumerate() {
                    put8(r + i, g0, vi);
                }
            }
            for j in g1..j1 {
                let v = dot_rows(level, t, w.row(j), x, acts, tile);
                for (i, &vi) in v.iter().enumerate() {
                    put(r + i, j, vi);
                }
            }
            r += TILE;
        }
        while r < m {
            for g0 in (j0..g1).step_by(GROUP) {
                put8(
                    r,
                    g0,
                    &dot_group(level, t, w.group(g0 / GROUP), acts, [r])[0],
                );
            }
            for j in g1..j1 {
                put(r, j, dot_rows(level, t, w.row(j), x, acts, [r])[0]);
            }
            r += 1;
        }
    };
    crate::team::for_each_index(n.div_ceil(PREFILL_ROWS), task);
}
