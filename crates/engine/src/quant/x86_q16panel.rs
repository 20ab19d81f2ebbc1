//! AVX-512 VNNI prefill for the 32-block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against 16-bit
//! activations, over panels of 16 weight rows unpacked once per product: each 32-bit lane is
//! one row, holding the two weights (as i16) that one broadcast activation pair meets, so a
//! `vpdpwssd` advances 16 rows by 2 values with no unpacking in the loop and no lane folding
//! at the end of a block (the group kernels, [`super::x86_512::dot_group16`], unpack 8 rows
//! per tile of activation rows and fold lane pairs per block and row).
//!
//! The per-block f32 steps are the group kernels' (`acc += f32(sum) * (d * da)`, the offset /
//! minimum term into a second accumulator, both added at the end), lane for lane: results are
//! bit-identical to them, so prefill still equals decode bit for bit.

// Index loops over lanes read closer to the block layouts than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::act::BlockQ16;
use super::packed::GROUP;
use super::x86_512::swap_mid_bytes;
use super::x86_kqpanel::PanelOut;
use super::x86_q5::{first_bits, fives, layout, next_bits};
use super::{QMatrix, QType, QK};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows per panel (one per 32-bit lane of a 512-bit register).
const LANES: usize = 16;

/// Activation rows that meet each load of a panel word.
const TILE: usize = 4;

/// One 32-block column of 16 rows, unpacked (1.1 KiB).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelBlock {
    /// Pair `p`, lane `l`: row `l`'s weights at the activation values stored at `2p, 2p + 1`
    /// of a [`BlockQ16`] (its swizzled order), as two i16.
    q: [[i32; LANES]; QK / 2],
    d: [f32; LANES],
    /// Q4_1 / Q5_1: the minima; the others: `d` again (their offset term's factor).
    m: [f32; LANES],
}

const EMPTY: PanelBlock = PanelBlock {
    q: [[0; LANES]; QK / 2],
    d: [0.0; LANES],
    m: [0.0; LANES],
};

thread_local! {
    /// Each thread's panel, reused across products.
    static PANEL: RefCell<Vec<PanelBlock>> = const { RefCell::new(Vec::new()) };
}

/// The kernel kind of `t` (0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q5_0, 4 Q5_1), `None` for the others.
fn kind(t: QType) -> Option<u8> {
    match t {
        QType::Q8_0 => Some(0),
        QType::Q4_0 => Some(1),
        QType::Q4_1 => Some(2),
        QType::Q5_0 => Some(3),
        QType::Q5_1 => Some(4),
        _ => None,
    }
}

/// Whether this route takes `w` with activations prepared at 16 bits: a 32-block type
/// whose rows are all in interleaved groups (the group kernels' rows, so the bits agree).
pub fn takes(w: &QMatrix, acts: &super::QuantizedActs) -> bool {
    kind(w.qtype()).is_some() && acts.has_q16() && w.rows() > 0 && w.grouped_rows() == w.rows()
}

/// The 8 rows' weights of one group-block at `p` (type `KIND`), quad by quad (values
/// `4q..4q + 4`): row `l` in 32-bit lanes `2l` (values `4q, 4q + 2`) and `2l + 1` (`4q + 1,
/// 4q + 3`) as i16 pairs, exactly the vectors the group kernels multiply.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_quads<const KIND: u8>(p: *const u8) -> [__m512i; 8] {
    let mut out = [_mm512_setzero_si512(); 8];
    let load = |at: usize| {
        // SAFETY: the caller passes a whole group-block; `at` stays inside it.
        unsafe { _mm256_loadu_si256(p.add(at) as *const __m256i) }
    };
    match KIND {
        0 => {
            for (c, o) in out.iter_mut().enumerate() {
                *o = _mm512_cvtepi8_epi16(swap_mid_bytes(load(16 + 32 * c)));
            }
        }
        1 | 2 => {
            let off = if KIND == 2 { 32 } else { 16 };
            let m4 = _mm512_set1_epi16(0x0f);
            for c in 0..4 {
                let w = _mm512_cvtepu8_epi16(swap_mid_bytes(load(off + 32 * c)));
                out[c] = _mm512_and_si512(w, m4);
                out[4 + c] = _mm512_srli_epi16(w, 4);
            }
        }
        _ => {
            let (_, qh_off, qs_off) = layout(KIND == 4);
            // SAFETY: as `load`.
            let mut bits = unsafe { first_bits(p.add(qh_off)) };
            for c in 0..4 {
                let (lo, hi) = fives(load(qs_off + 32 * c), bits.0, bits.1);
                bits = next_bits(bits);
                out[c] = _mm512_cvtepu8_epi16(swap_mid_bytes(lo));
                out[4 + c] = _mm512_cvtepu8_epi16(swap_mid_bytes(hi));
            }
        }
    }
    out
}

/// The 8 f16 scales of a group-block at `p` and (Q4_1 / Q5_1) the 8 minima after them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_scales<const KIND: u8>(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller passes a whole group-block (16 or 32 scale bytes first).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m = if KIND == 2 || KIND == 4 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            d
        };
        (d, m)
    }
}

/// Unpacks the 8 or 16 rows from `j0` (one or two whole interleaved groups) of `w` into
/// `panel` (one entry per block column; lanes of a missing second group stay zero).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack<const KIND: u8>(w: &QMatrix, j0: usize, rows: usize, panel: &mut Vec<PanelBlock>) {
    let (nb, gb) = (w.cols() / QK, GROUP * w.qtype().block_bytes());
    panel.clear();
    panel.resize(nb, EMPTY);
    let g0 = w.group(j0 / GROUP).as_ptr();
    let g1 = (rows > GROUP).then(|| w.group(j0 / GROUP + 1).as_ptr());
    // Lanes 0..8 from the first group, 8..16 from the second: even or odd 32-bit lanes.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (b, p) in panel.iter_mut().enumerate() {
        // SAFETY: block column b < nb of each group lies inside it (`gb` bytes each).
        unsafe {
            let q0 = group_quads::<KIND>(g0.add(b * gb));
            let (d0, m0) = group_scales::<KIND>(g0.add(b * gb));
            let (q1, d1, m1) = match g1 {
                Some(g) => {
                    let (d, m) = group_scales::<KIND>(g.add(b * gb));
                    (group_quads::<KIND>(g.add(b * gb)), d, m)
                }
                None => (
                    [_mm512_setzero_si512(); 8],
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                ),
            };
            for q in 0..8 {
                let lo = _mm512_permutex2var_epi32(q0[q], even, q1[q]);
                let hi = _mm512_permutex2var_epi32(q0[q], odd, q1[q]);
                _mm512_store_si512(p.q[2 * q].as_mut_ptr() as *mut _, lo);
                _mm512_store_si512(p.q[2 * q + 1].as_mut_ptr() as *mut _, hi);
            }
            let wide = |a: __m256, b: __m256| _mm512_insertf32x8::<1>(_mm512_castps256_ps512(a), b);
            _mm512_store_ps(p.d.as_mut_ptr(), wide(d0, d1));
            _mm512_store_ps(p.m.as_mut_ptr(), wide(m0, m1));
        }
    }
}

/// `acc + w · (the activation pair at 2i, 2i + 1 of a, in every lane)`: one `vpdpwssd`
/// with an embedded broadcast of the pair from memory (a separate broadcast would double
/// the instructions of the loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_pair(acc: __m512i, w: __m512i, a: &BlockQ16, i: usize) -> __m512i {
    let mut acc = acc;
    // SAFETY: i < 16, so the 4 bytes read lie inside `qs` (32 i16).
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {w}, dword ptr [{p}]{{1to16}}",
            acc = inout(zmm_reg) acc,
            w = in(zmm_reg) w,
            p = in(reg) a.qs.as_ptr().add(2 * i),
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    acc
}

/// `out[r][l]` = row `l` of the panel · activation row `a[r]`, in the group kernels' f32
/// steps.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const R: usize, const KIND: u8>(
    panel: &[PanelBlock],
    a: [&[BlockQ16]; R],
) -> [__m512; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    let mut accm = [_mm512_setzero_ps(); R];
    for (b, p) in panel.iter().enumerate() {
        // SAFETY: every activation row has the panel's blocks (checked by the caller).
        let ys: [&BlockQ16; R] = std::array::from_fn(|r| unsafe { a[r].get_unchecked(b) });
        // Two chains per row halve the dependent `vpdpwssd` latency.
        let mut s0 = [_mm512_setzero_si512(); R];
        let mut s1 = [_mm512_setzero_si512(); R];
        for i in (0..QK / 2).step_by(2) {
            let q0 = _mm512_load_si512(p.q[i].as_ptr() as *const _);
            let q1 = _mm512_load_si512(p.q[i + 1].as_ptr() as *const _);
            for r in 0..R {
                s0[r] = dot_pair(s0[r], q0, ys[r], i);
                s1[r] = dot_pair(s1[r], q1, ys[r], i + 1);
            }
        }
        let d = _mm512_load_ps(p.d.as_ptr());
        let m = _mm512_load_ps(p.m.as_ptr());
        for r in 0..R {
            let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[r], s1[r]));
            acc[r] = _mm512_fmadd_ps(sum, _mm512_mul_ps(d, _mm512_set1_ps(ys[r].d)), acc[r]);
            let s = ys[r].s;
            let s = match KIND {
                1 => -8.0 * s,
                3 => -16.0 * s,
                _ => s,
            };
            if KIND != 0 {
                accm[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(s), accm[r]);
            }
        }
    }
    std::array::from_fn(|r| _mm512_add_ps(acc[r], accm[r]))
}

/// Packs rows `j0 .. j0 + rows` of `w` into `panel`, then runs every activation row against
/// it (tiles of [`TILE`], then single rows), each row's results stored through `out`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run_rows<const KIND: u8>(
    w: &QMatrix,
    j0: usize,
    rows: usize,
    panel: &mut Vec<PanelBlock>,
    acts: &super::QuantizedActs,
    m: usize,
    out: &PanelOut,
) {
    pack::<KIND>(w, j0, rows, panel);
    let panel = &panel[..];
    let row = |r: usize| acts.q16_row(r);
    let mut r = 0;
    while r + TILE <= m {
        let v = tile::<TILE, KIND>(panel, std::array::from_fn(|i| row(r + i)));
        for (i, o) in v.into_iter().enumerate() {
            out.put(r + i, o);
        }
        r += TILE;
    }
    while r < m {
        out.put(r, tile::<1, KIND>(panel, [row(r)])[0]);
        r += 1;
    }
}

/// `c[m, n] = x · wᵀ` for a matrix [`takes`] accepts, over panels of [`LANES`] rows on the
/// engine's team.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI (`Level::Avx512Vnni`).
pub unsafe fn matmul_bt(acts: &super::QuantizedActs, w: &QMatrix, c: &mut [f32], m: usize) {
    let (n, k) = (w.rows(), w.cols());
    assert!(takes(w, acts), "q16 panel: not a grouped 32-block matrix");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    assert!(
        acts.rows >= m && acts.cols == k,
        "matmul: activations not prepared"
    );
    let kind = kind(w.qtype()).unwrap_or(0);
    let c_addr = c.as_mut_ptr() as usize;
    let task = |p: usize| {
        let j0 = p * LANES;
        let rows = LANES.min(n - j0);
        let out = PanelOut::new(c_addr, m, n, j0, rows);
        PANEL.with_borrow_mut(|panel| {
            // SAFETY: the caller guarantees the CPU features.
            unsafe {
                match kind {
                    0 => run_rows::<0>(w, j0, rows, panel, acts, m, &out),
                    1 => run_rows::<1>(w, j0, rows, panel, acts, m, &out),
                    2 => run_rows::<2>(w, j0, rows, panel, acts, m, &out),
                    3 => run_rows::<3>(w, j0, rows, panel, acts, m, &out),
                    _ => run_rows::<4>(w, j0, rows, panel, acts, m, &out),
                }
            }
        });
    };
    crate::team::for_each_index(n.div_ceil(LANES), task);
}
