//! Prefill product `c = x · wᵀ` for F32 / F16 / BF16 weight rows without the GEMM crate:
//! [`STRIP`] weight rows at a time are widened and transposed into a depth-major strip
//! (`[depth][16]` f32, so one 32-byte load holds 8 output columns at one depth, one 64-byte
//! load all 16), then `c` is formed in register tiles fed by broadcasts of the activations
//! read straight from their rows: on AVX2 ([`Avx2Tiles`]) 6 rows × 1 strip, 12 accumulators;
//! on AVX-512 ([`Avx512Tiles`]) 12 rows × 2 strips, 24 accumulators. The activations are
//! never packed: the GEMM crate packed them again for every panel of every piece, 10 % of
//! SmolLM2 F16 prefill on a Zen 3, and on AVX-512 its 16-row panels ran in 1 × 6 register
//! tiles.
//!
//! Depth runs in blocks of [`DEPTH_BLOCK`]; per block a panel of up to [`PANEL_STRIPS`]
//! strips is widened (L2), and each tile of activation rows (L1) passes over all of them.
//! Each output is the f32 sum of its products in depth order, blocks added in turn, so it
//! depends only on the shapes, never on the thread, piece or tile.

use super::x86_float::load8;
use std::arch::x86_64::*;

/// Weight rows (output columns) per strip: two registers.
pub const STRIP: usize = 16;
/// Depth per block: a 16 KiB strip block.
const DEPTH_BLOCK: usize = 256;

/// Element `i` of row bytes `p` (elements of `KIND`) as f32.
#[inline(always)]
unsafe fn load1<const KIND: u8>(p: *const u8, i: usize) -> f32 {
    match KIND {
        0 => (p.add(4 * i) as *const f32).read_unaligned(),
        1 => _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p.add(2 * i) as *const u16).read_unaligned() as i32,
        ))),
        _ => f32::from_bits(((p.add(2 * i) as *const u16).read_unaligned() as u32) << 16),
    }
}

/// The 8 × 8 block `r[row][depth]` transposed: result `d` holds depth `d` of the 8 rows.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Per 128-bit lane: rows 0–3 (4–7) at depths 0, 1, 2, 3 (4, 5, 6, 7 in the high lane).
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Depths `d0..d0 + depth` of `rows` (≤ 16) weight rows from `p` (row stride `rb` bytes)
/// into `strip` (`[depth][16]`), columns past `rows` zero.
#[inline(always)]
pub(super) unsafe fn widen_strip<const KIND: u8>(
    p: *const u8,
    rb: usize,
    rows: usize,
    d0: usize,
    depth: usize,
    strip: &mut [f32],
) {
    debug_assert!(rows <= STRIP && strip.len() >= depth * STRIP);
    let sp = strip.as_mut_ptr();
    let body = depth / 8 * 8;
    for half in 0..2 {
        let r0 = 8 * half;
        if r0 + 8 <= rows {
            let mut d = 0;
            while d < body {
                let r = std::array::from_fn(|j| load8::<KIND>(p.add((r0 + j) * rb), d0 + d));
                for (t, v) in transpose8(r).into_iter().enumerate() {
                    _mm256_storeu_ps(sp.add((d + t) * STRIP + r0), v);
                }
                d += 8;
            }
            for d in body..depth {
                for j in 0..8 {
                    *sp.add(d * STRIP + r0 + j) = load1::<KIND>(p.add((r0 + j) * rb), d0 + d);
                }
            }
        } else {
            for d in 0..depth {
                for j in 0..8 {
                    let row = r0 + j;
                    *sp.add(d * STRIP + row) = if row < rows {
                        load1::<KIND>(p.add(row * rb), d0 + d)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// One depth `d` of a tile: 2 strip loads, `RM` broadcasts, `2 RM` multiply-adds. (A
/// function, not a closure: closures do not inherit `target_feature`.)
#[inline(always)]
unsafe fn step<const RM: usize>(
    xr: &[*const f32; RM],
    strip: *const f32,
    d: usize,
    a0: &mut [__m256; RM],
    a1: &mut [__m256; RM],
) {
    let b0 = _mm256_loadu_ps(strip.add(d * STRIP));
    let b1 = _mm256_loadu_ps(strip.add(d * STRIP + 8));
    for i in 0..RM {
        let a = _mm256_broadcast_ss(&*xr[i].add(d));
        a0[i] = _mm256_fmadd_ps(a, b0, a0[i]);
        a1[i] = _mm256_fmadd_ps(a, b1, a1[i]);
    }
}

/// Where a tile's results go: `cols` (≤ 16 per strip of the tile) columns of rows `ldc` floats apart from `c`,
/// stored (the first depth block) or added (`add`: the later ones).
#[derive(Clone, Copy)]
pub struct TileOut {
    pub c: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    pub add: bool,
}

/// `out (+)= Σ_d x[i, d] · strip[d, ..]` for the `RM` rows from `x` (row stride `ldx`),
/// `depth` steps.
#[inline(always)]
unsafe fn tile<const RM: usize>(
    x: *const f32,
    ldx: usize,
    strip: *const f32,
    depth: usize,
    out: TileOut,
) {
    let TileOut { c, ldc, cols, add } = out;
    let mut a0 = [_mm256_setzero_ps(); RM];
    let mut a1 = [_mm256_setzero_ps(); RM];
    let xr: [*const f32; RM] = std::array::from_fn(|i| x.add(i * ldx));
    // Four depths per pass: the loop's own instructions otherwise cost a tenth of the speed.
    let body = depth / 4 * 4;
    let mut d = 0;
    while d < body {
        step(&xr, strip, d, &mut a0, &mut a1);
        step(&xr, strip, d + 1, &mut a0, &mut a1);
        step(&xr, strip, d + 2, &mut a0, &mut a1);
        step(&xr, strip, d + 3, &mut a0, &mut a1);
        d += 4;
    }
    for d in body..depth {
        step(&xr, strip, d, &mut a0, &mut a1);
    }
    for i in 0..RM {
        let ci = c.add(i * ldc);
        if cols == STRIP {
            let (mut v0, mut v1) = (a0[i], a1[i]);
            if add {
                v0 = _mm256_add_ps(_mm256_loadu_ps(ci), v0);
                v1 = _mm256_add_ps(_mm256_loadu_ps(ci.add(8)), v1);
            }
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci.add(8), v1);
        } else {
            let mut t = [0f32; STRIP];
            _mm256_storeu_ps(t.as_mut_ptr(), a0[i]);
            _mm256_storeu_ps(t.as_mut_ptr().add(8), a1[i]);
            for (j, &v) in t[..cols].iter().enumerate() {
                *ci.add(j) = if add { *ci.add(j) + v } else { v };
            }
        }
    }
}

/// A register-tile kernel of the strip product: [`Tiles::ROWS`] activation rows at a time
/// against up to [`Tiles::STRIPS`] adjacent strips.
pub trait Tiles {
    /// Activation rows per tile.
    const ROWS: usize;
    /// Strips per tile.
    const STRIPS: usize;
    /// `out (+)= x[..rm] · strips` for `rm` (1..=ROWS) rows from `x` (row stride `ldx`), over
    /// the `out.cols` columns of the strips from `strip` (`block` floats apart), `depth` steps.
    ///
    /// # Safety
    /// The CPU has the kernel's features; the pointers cover what the arguments say.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rm: usize,
        x: *const f32,
        ldx: usize,
        strip: *const f32,
        block: usize,
        depth: usize,
        out: TileOut,
    );
}

/// AVX2 + FMA: 6 rows × 1 strip, 6 × 2 accumulators + 2 weight registers + 1 broadcast = 15
/// of the 16 registers.
pub struct Avx2Tiles;

impl Tiles for Avx2Tiles {
    const ROWS: usize = 6;
    const STRIPS: usize = 1;

    #[inline(always)]
    unsafe fn tile(
        rm: usize,
        x: *const f32,
        ldx: usize,
        strip: *const f32,
        _block: usize,
        depth: usize,
        out: TileOut,
    ) {
        match rm {
            6 => tile::<6>(x, ldx, strip, depth, out),
            5 => tile::<5>(x, ldx, strip, depth, out),
            4 => tile::<4>(x, ldx, strip, depth, out),
            3 => tile::<3>(x, ldx, strip, depth, out),
            2 => tile::<2>(x, ldx, strip, depth, out),
            _ => tile::<1>(x, ldx, strip, depth, out),
        }
    }
}

/// Columns `cols` of `c = x · wᵀ` on AVX2 ([`columns`] with [`Avx2Tiles`]).
///
/// # Safety
/// As [`columns`]; the CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bt_columns<const KIND: u8>(
    x: &[f32],
    w: &[u8],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    cols: std::ops::Range<usize>,
    panel: &mut [f32],
) {
    columns::<KIND, Avx2Tiles>(x, w, m, n, k, c, cols, panel)
}

/// Columns `cols` of `c = x · wᵀ` on AVX-512 ([`columns`] with [`Avx512Tiles`]).
///
/// # Safety
/// As [`columns`]; the CPU must have AVX2, FMA, F16C and AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bt_columns512<const KIND: u8>(
    x: &[f32],
    w: &[u8],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    cols: std::ops::Range<usize>,
    panel: &mut [f32],
) {
    columns::<KIND, Avx512Tiles>(x, w, m, n, k, c, cols, panel)
}

/// Columns `cols` of `c = x · wᵀ`: `x` `[m, k]` f32, `w` `[n, k]` row-major elements of `KIND`,
/// `c` `[m, n]` at `c` (only columns in `cols` are written), in tiles of `T`. `panel` is
/// scratch of at least [`panel_len`] floats.
///
/// # Safety
/// The CPU must have `T`'s features (the caller's `target_feature` context); `c` must point
/// at `m * n` writable floats that no other thread writes in columns `cols`; `cols.end <= n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn columns<const KIND: u8, T: Tiles>(
    x: &[f32],
    w: &[u8],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    cols: std::ops::Range<usize>,
    panel: &mut [f32],
) {
    let rb = k * if KIND == 0 { 4 } else { 2 };
    assert!(x.len() == m * k && w.len() == n * rb && cols.end <= n);
    assert!(panel.len() >= panel_len(k));
    let block = DEPTH_BLOCK.min(k) * STRIP;
    let mut j0 = cols.start;
    while j0 < cols.end {
        let j1 = (j0 + PANEL_STRIPS * STRIP).min(cols.end);
        let mut d0 = 0;
        while d0 < k {
            let depth = DEPTH_BLOCK.min(k - d0);
            for (s, j) in (j0..j1).step_by(STRIP).enumerate() {
                let rows = STRIP.min(j1 - j);
                let strip = &mut panel[s * block..(s + 1) * block];
                widen_strip::<KIND>(w.as_ptr().add(j * rb), rb, rows, d0, depth, strip);
            }
            let mut i = 0;
            while i < m {
                let rm = T::ROWS.min(m - i);
                for (s, j) in (j0..j1).step_by(T::STRIPS * STRIP).enumerate() {
                    let out = TileOut {
                        c: c.add(i * n + j),
                        ldc: n,
                        cols: (T::STRIPS * STRIP).min(j1 - j),
                        add: d0 > 0,
                    };
                    let strip = panel.as_ptr().add(s * T::STRIPS * block);
                    T::tile(rm, x.as_ptr().add(i * k + d0), k, strip, block, depth, out);
                }
                i += rm;
            }
            d0 += depth;
        }
        j0 = j1;
    }
}

/// Strips per widened panel: 16 × 16 KiB, within L2.
const PANEL_STRIPS: usize = 16;

/// Floats of panel scratch [`matmul_bt_columns`] needs for depth `k`.
pub fn panel_len(k: usize) -> usize {
    PANEL_STRIPS * DEPTH_BLOCK.min(k) * STRIP
}

/// AVX-512 F: 12 rows × 2 strips, 12 × 2 accumulators + 2 weight registers + broadcasts, of
/// the 32 registers.
pub struct Avx512Tiles;

impl Tiles for Avx512Tiles {
    const ROWS: usize = 12;
    const STRIPS: usize = 2;

    #[inline(always)]
    unsafe fn tile(
        rm: usize,
        x: *const f32,
        ldx: usize,
        strip: *const f32,
        block: usize,
        depth: usize,
        out: TileOut,
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rm {
                    $($r => tile512::<$r>(x, ldx, strip, block, depth, out),)*
                    _ => tile512::<12>(x, ldx, strip, block, depth, out),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11)
    }
}

/// [`tile`] on AVX-512: `RM` rows against the two strips at `strip` and `strip + block` (the
/// second one read only when `out.cols > 16`), each output the f32 sum of its products in
/// depth order as in the AVX2 tiles.
#[inline(always)]
unsafe fn tile512<const RM: usize>(
    x: *const f32,
    ldx: usize,
    strip: *const f32,
    block: usize,
    depth: usize,
    out: TileOut,
) {
    let cols = out.cols;
    let mut a0 = [_mm512_setzero_ps(); RM];
    let mut a1 = [_mm512_setzero_ps(); RM];
    let xr: [*const f32; RM] = std::array::from_fn(|i| x.add(i * ldx));
    if cols > STRIP {
        let s1 = strip.add(block);
        for d in 0..depth {
            let b0 = _mm512_loadu_ps(strip.add(d * STRIP));
            let b1 = _mm512_loadu_ps(s1.add(d * STRIP));
            for i in 0..RM {
                let a = _mm512_set1_ps(*xr[i].add(d));
                a0[i] = _mm512_fmadd_ps(a, b0, a0[i]);
                a1[i] = _mm512_fmadd_ps(a, b1, a1[i]);
            }
        }
    } else {
        for d in 0..depth {
            let b0 = _mm512_loadu_ps(strip.add(d * STRIP));
            for i in 0..RM {
                a0[i] = _mm512_fmadd_ps(_mm512_set1_ps(*xr[i].add(d)), b0, a0[i]);
            }
        }
    }
    store_pair(&a0, &a1, out);
}

/// The results of a two-strip AVX-512 tile (`a0`: the first strip's 16 columns, `a1` the
/// second's) for `RM` rows into `out`, its `cols` (≤ 32) columns stored or added, the rest
/// masked off.
#[inline(always)]
pub(super) unsafe fn store_pair<const RM: usize>(
    a0: &[__m512; RM],
    a1: &[__m512; RM],
    out: TileOut,
) {
    let TileOut { c, ldc, cols, add } = out;
    let m0: __mmask16 = if cols >= STRIP { !0 } else { (1 << cols) - 1 };
    let m1: __mmask16 = if cols >= 2 * STRIP {
        !0
    } else if cols > STRIP {
        (1 << (cols - STRIP)) - 1
    } else {
        0
    };
    for i in 0..RM {
        let ci = c.add(i * ldc);
        let (mut v0, mut v1) = (a0[i], a1[i]);
        if add {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci.add(STRIP)), v1);
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci.add(STRIP), m1, v1);
    }
}
