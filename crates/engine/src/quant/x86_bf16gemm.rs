//! The mixed-precision training GEMM on AVX-512 BF16: `C = alpha · op(A) · op(B) + beta · C`
//! with both operands rounded to BF16 as they are packed (nearest, ties to even; the
//! conversion instruction flushes f32 subnormals to zero) and every product accumulated in
//! f32 by `vdpbf16ps`, two multiply-adds per lane and instruction: twice the f32 FMA rate.
//! The layout is the one of [`super::x86_bf16dot`]'s prefill product, with both sides packed
//! from f32 in either orientation:
//! - op(A) → BF16 rows `[m, kp]` (`kp`: `k` rounded up to 32, zero padded); a tile broadcasts
//!   one pair of a row to every lane;
//! - op(B) → strips of 16 columns per depth block, `[pairs][16]` 32-bit words (lane `r`:
//!   column `r`'s values at depths `2p, 2p + 1`), zero past `k` and past `n`.
//!
//! Each output is the sum of its pair products in depth order, depth blocks added in turn,
//! then `alpha · sum + beta · c`: it depends only on the shapes, never on the threads or on
//! how the output is divided, so results are bitwise reproducible.

use super::x86_bf16dot::{tile, DEPTH_BLOCK, ROWS, STRIP};
use super::x86_strip::widen_strip;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Output rows per task (a multiple of the tile's rows).
const TASK_ROWS: usize = 8 * ROWS;
/// Output columns per task (16 strips: a 128 KiB panel per depth block).
const TASK_COLS: usize = 16 * STRIP;

/// Whether the CPU has what this GEMM needs (checked once).
pub fn available() -> bool {
    super::x86_bf16dot::available()
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// A strided f32 matrix: element (i, j) at `p[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct View {
    p: *const f32,
    rs: usize,
    cs: usize,
}
// SAFETY: only read, inside bounds the caller checked, while the caller's borrow is alive.
unsafe impl Send for View {}
unsafe impl Sync for View {}

#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each task writes its own block of C.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `C = alpha · op(A) · op(B) + beta · C` in BF16 operands with f32 sums; the arguments are
/// those of [`crate::gemm::sgemm`], whose bounds checks the caller has made. `parallel`: divide
/// the work among the rayon threads (false inside a parallel region).
///
/// # Safety
/// [`available`] must hold, and every element the shapes and strides address must lie inside
/// `a`, `b` and `c`, with `c` not aliasing them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_bf16(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    parallel: bool,
) {
    let kp = k.div_ceil(32) * 32;
    let av = if trans_a {
        View {
            p: a,
            rs: 1,
            cs: lda,
        }
    } else {
        View {
            p: a,
            rs: lda,
            cs: 1,
        }
    };
    // op(B) is [k, n]; as strips we read it by column j = row of B stored `[n, k]`.
    let bv = if trans_b {
        View {
            p: b,
            rs: 1,
            cs: ldb,
        }
    } else {
        View {
            p: b,
            rs: ldb,
            cs: 1,
        }
    };
    let depth_block = DEPTH_BLOCK.min(kp);
    let blocks = kp.div_ceil(depth_block);
    // Words of one strip's depth block, and of a whole strip (strip-major: strip `s`, depth
    // block `db` at `s * strip_words + db * block`).
    let block = depth_block / 2 * STRIP;
    let strip_words = blocks * block;
    let strips = n.div_ceil(STRIP);
    // The packed operands live in this thread's scratch, reused from product to product:
    // fresh buffers of tens of MB came back as zeroed pages each time (~5% of a step).
    let mut scratch = Scratch::take();
    let (xa, pb) = scratch.sized(m * kp, strips * strip_words);
    let pack_a = |i0: usize, rows: &mut [u16]| {
        if av.cs == 1 {
            for (r, row) in rows.chunks_exact_mut(kp).enumerate() {
                pack_row(av, i0 + r, k, row);
            }
        } else {
            for (g, group) in rows.chunks_mut(kp * GROUP).enumerate() {
                pack_rows_transposed(av, i0 + g * GROUP, k, kp, group);
            }
        }
    };
    let pack_b =
        |s: usize, strip: &mut [u32]| pack_strip(bv, s * STRIP, n, k, kp, depth_block, strip);
    if parallel {
        xa.par_chunks_mut(kp * TASK_ROWS)
            .enumerate()
            .for_each(|(t, rows)| pack_a(t * TASK_ROWS, rows));
        pb.par_chunks_mut(strip_words)
            .enumerate()
            .for_each(|(s, strip)| pack_b(s, strip));
    } else {
        pack_a(0, xa);
        for (s, strip) in pb.chunks_mut(strip_words).enumerate() {
            pack_b(s, strip);
        }
    }
    let row_tasks = m.div_ceil(TASK_ROWS);
    let col_tasks = n.div_ceil(TASK_COLS);
    let out = Out(c);
    let (xa, pb) = (&*xa, &*pb);
    let shape = Shape {
        m,
        n,
        kp,
        depth_block,
        blocks,
        block,
        strip_words,
        col_tasks,
    };
    // `out.get()`, not `out.0`: the closure must capture the Send wrapper, not the pointer.
    let task = |t: usize| run_task(&shape, t, xa, pb, alpha, beta, out.get(), ldc);
    if parallel {
        (0..row_tasks * col_tasks).into_par_iter().for_each(task);
    } else {
        (0..row_tasks * col_tasks).for_each(task);
    }
    scratch.give_back();
}

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Scratch>> = const { std::cell::Cell::new(None) };
}

/// The calling thread's packing buffers (taken out of the thread-local while a product uses
/// them, so a product that somehow ran inside another would get fresh ones, never shared).
#[derive(Default)]
struct Scratch {
    a: Vec<u16>,
    b: Vec<u32>,
}

impl Scratch {
    fn take() -> Scratch {
        SCRATCH.with(|s| s.take()).unwrap_or_default()
    }

    /// Buffers of exactly these lengths; their old contents are stale (packing overwrites
    /// every element, padding included).
    fn sized(&mut self, a: usize, b: usize) -> (&mut [u16], &mut [u32]) {
        if self.a.len() < a {
            self.a.resize(a, 0);
        }
        if self.b.len() < b {
            self.b.resize(b, 0);
        }
        // Debug builds (the tests) poison them with BF16 NaNs: a word packing failed to
        // write would turn its product's sums into NaN.
        #[cfg(debug_assertions)]
        {
            self.a[..a].fill(0x7FC0);
            self.b[..b].fill(0x7FC0_7FC0);
        }
        (&mut self.a[..a], &mut self.b[..b])
    }

    fn give_back(self) {
        SCRATCH.with(|s| s.set(Some(self)));
    }
}

/// The packed sizes of one product.
struct Shape {
    m: usize,
    n: usize,
    kp: usize,
    depth_block: usize,
    blocks: usize,
    block: usize,
    strip_words: usize,
    col_tasks: usize,
}

/// Output block `t` (row-major over the task grid): its sums over every depth block, then
/// `alpha · sum + beta · c` into C.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_task(
    sh: &Shape,
    t: usize,
    xa: &[u16],
    pb: &[u32],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let (ti, tj) = (t / sh.col_tasks, t % sh.col_tasks);
    let (i0, j0) = (ti * TASK_ROWS, tj * TASK_COLS);
    let (rows, cols) = (TASK_ROWS.min(sh.m - i0), TASK_COLS.min(sh.n - j0));
    let mut sums = vec![0f32; rows * cols];
    for db in 0..sh.blocks {
        let d0 = db * sh.depth_block;
        let pairs = sh.depth_block.min(sh.kp - d0) / 2;
        let mut i = 0;
        while i < rows {
            let rm = ROWS.min(rows - i);
            let mut j = 0;
            while j < cols {
                let s = (j0 + j) / STRIP;
                let strip = pb.as_ptr().add(s * sh.strip_words + db * sh.block);
                let tile_cols = (2 * STRIP).min(cols - j);
                let x = xa.as_ptr().add((i0 + i) * sh.kp + d0);
                let cij = sums.as_mut_ptr().add(i * cols + j);
                let (kp, next, add) = (sh.kp, sh.strip_words, db > 0);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match rm {
                            $($r => tile::<$r>(x, kp, strip, next, pairs, cij, cols, tile_cols, add),)*
                            _ => tile::<12>(x, kp, strip, next, pairs, cij, cols, tile_cols, add),
                        }
                    };
                }
                rows!(1 2 3 4 5 6 7 8 9 10 11);
                j += 2 * STRIP;
            }
            i += rm;
        }
    }
    for r in 0..rows {
        let dst = c.add((i0 + r) * ldc + j0);
        for (q, &v) in sums[r * cols..(r + 1) * cols].iter().enumerate() {
            let d = dst.add(q);
            // beta == 0: C is only written (it may hold NaN), as sgemm promises.
            *d = if beta == 0.0 {
                alpha * v
            } else {
                alpha * v + beta * *d
            };
        }
    }
}

/// Row `i` of op(A) (`k` values) as BF16 into `row` (`kp` values, zero past `k`).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512bf16")]
unsafe fn pack_row(a: View, i: usize, k: usize, row: &mut [u16]) {
    let src = a.p.add(i * a.rs);
    if a.cs == 1 {
        let mut t = 0;
        while t < row.len() {
            let lo = load16(src, t, k);
            let hi = load16(src, t + 16, k);
            let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(row.as_mut_ptr().add(t) as *mut _, v);
            t += 32;
        }
    } else {
        // A column of the stored matrix: strided, converted one value at a time by the same
        // instruction (so both orientations round alike).
        let mut buf = [0f32; 32];
        let mut t = 0;
        while t < row.len() {
            for (q, slot) in buf.iter_mut().enumerate() {
                *slot = if t + q < k {
                    *src.add((t + q) * a.cs)
                } else {
                    0.0
                };
            }
            let lo = _mm512_loadu_ps(buf.as_ptr());
            let hi = _mm512_loadu_ps(buf.as_ptr().add(16));
            let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(row.as_mut_ptr().add(t) as *mut _, v);
            t += 32;
        }
    }
}

/// Rows of op(A) packed together where op(A) is a stored matrix transposed (`rs == 1`).
const GROUP: usize = 16;

/// Rows `i0..` of op(A) (`group.len() / kp` of them, at most [`GROUP`]) as BF16 into `group`
/// (`kp` values a row, zero past `k`), where op(A)'s rows are the stored matrix's columns:
/// each depth's values of the whole group are one contiguous load, transposed through a
/// small buffer, instead of one strided read per value.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512bf16")]
unsafe fn pack_rows_transposed(a: View, i0: usize, k: usize, kp: usize, group: &mut [u16]) {
    let rows = group.len() / kp;
    let mask = ((1u32 << rows) - 1) as __mmask16;
    // buf[q][r]: depth t0 + q of row i0 + r.
    let mut buf = [0f32; 32 * GROUP];
    let lanes = _mm512_setr_epi32(
        0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
    );
    let mut t0 = 0;
    while t0 < kp {
        for q in 0..32 {
            let v = if t0 + q < k {
                _mm512_maskz_loadu_ps(mask, a.p.add(i0 + (t0 + q) * a.cs))
            } else {
                _mm512_setzero_ps()
            };
            _mm512_storeu_ps(buf.as_mut_ptr().add(q * GROUP), v);
        }
        for r in 0..rows {
            let col = buf.as_ptr().add(r);
            let lo = _mm512_i32gather_ps::<4>(lanes, col);
            let hi = _mm512_i32gather_ps::<4>(lanes, col.add(16 * GROUP));
            let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(group.as_mut_ptr().add(r * kp + t0) as *mut _, v);
        }
        t0 += 32;
    }
}

/// `src[t..t + 16]`, zero at `t + q >= k`.
#[inline(always)]
unsafe fn load16(src: *const f32, t: usize, k: usize) -> __m512 {
    if t + 16 <= k {
        _mm512_loadu_ps(src.add(t))
    } else if t >= k {
        _mm512_setzero_ps()
    } else {
        _mm512_maskz_loadu_ps(((1u32 << (k - t)) - 1) as __mmask16, src.add(t))
    }
}

/// The strip of op(B)'s columns `j0..j0 + 16` (those below `n`) over depths `0..kp` (zero
/// past `k`) into `dst`: depth blocks of `depth_block / 2` pairs, `[pairs][16]` words each,
/// every block `depth_block / 2 * 16` words from the last.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512bf16")]
unsafe fn pack_strip(
    b: View,
    j0: usize,
    n: usize,
    k: usize,
    kp: usize,
    depth_block: usize,
    dst: &mut [u32],
) {
    let cols = STRIP.min(n - j0);
    let pairs_per_block = depth_block / 2;
    let kp2 = kp / 2; // pairs in all
    if b.cs == 1 {
        // op(B)'s rows are contiguous along the columns: depth t, columns j0.. at
        // p[t * rs + j0]. Convert two depths at a time, interleave to pairs.
        let mask = if cols == STRIP {
            !0
        } else {
            ((1u32 << cols) - 1) as __mmask16
        };
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        for p in 0..kp2 {
            let row = |t: usize| {
                if t < k {
                    _mm512_maskz_loadu_ps(mask, b.p.add(t * b.rs + j0))
                } else {
                    _mm512_setzero_ps()
                }
            };
            let (lo, hi) = (row(2 * p), row(2 * p + 1));
            let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            let words = _mm512_permutexvar_epi16(interleave, v);
            let (db, q) = (p / pairs_per_block, p % pairs_per_block);
            _mm512_storeu_si512(
                dst.as_mut_ptr()
                    .add(db * pairs_per_block * STRIP + q * STRIP) as *mut _,
                words,
            );
        }
    } else {
        // Column j of op(B) is a stored row, contiguous along the depth: convert the rows to
        // BF16, then transpose their 32-bit pair words into the strip.
        let mut rows = vec![0u16; STRIP * kp];
        for (r, row) in rows.chunks_exact_mut(kp).take(cols).enumerate() {
            let view = View {
                p: b.p,
                rs: b.cs,
                cs: 1,
            };
            pack_row(view, j0 + r, k, row);
        }
        let blocks = kp2.div_ceil(pairs_per_block);
        for db in 0..blocks {
            let p0 = db * pairs_per_block;
            let pairs = pairs_per_block.min(kp2 - p0);
            let out = std::slice::from_raw_parts_mut(
                dst.as_mut_ptr().add(p0 * STRIP) as *mut f32,
                pairs * STRIP,
            );
            // A pair of BF16 values is one 32-bit word: the f32 strip packing moves them.
            widen_strip::<0>(rows.as_ptr() as *const u8, 2 * kp, cols, p0, pairs, out);
        }
    }
}
