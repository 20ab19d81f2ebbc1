//! Prefill products `c = x · wᵀ` of the interleaved 32-block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1) with 16-bit activations ([`BlockQ16`]) on the AMX-INT8 tile unit, bit-identical to
//! the AVX2 kernels `x86::dot_group16` / `x86_q5::dot_group16`.
//!
//! AMX multiplies bytes only, so each 16-bit activation `a = 256 * hi + lo` (its two
//! little-endian bytes: `lo` unsigned, `hi` signed) meets its weight twice. An A tile is 16
//! activation rows x one block's 64 raw bytes of `qs`, copied once per product into aligned
//! lines (`a_tiles`); the weights of 16 rows (two groups) are unpacked once per panel into two B
//! tiles per block, one holding each weight beside a zero at the `lo` byte positions, one at
//! the `hi` positions. The two int32 products give the exact block sum `256 * hi + lo`; the
//! block scales then follow `dot_group16`'s f32 operations in the same order (one fma per
//! block, the minimum term in its own chain, one final add).
//!
//! The tile loop (`tile_one`) keeps one A tile and two C pairs by block parity, so block b's
//! products run while block b - 1's sums are stored and block b - 2's are scaled.

use super::act::{BlockQ16, QuantizedActs};
use super::dot::{self, dot_rows};
use super::packed::{interleavable, GROUP};
use super::{QMatrix, QType};
use crate::amx::{self, TILE_ROWS};
use rayon::prelude::*;
use std::cell::RefCell;

/// Weight rows per panel (the 16 int32 columns of one C tile).
const PANEL: usize = 16;
/// Bytes of the two B tiles of one block column of a panel.
const PANEL_BLOCK: usize = 2 * TILE_ROWS * 64;

/// Whether [`qmatmul_bt_amx`] takes this product.
pub fn applies(acts: &QuantizedActs, w: &QMatrix, m: usize) -> bool {
    amx::int8_available()
        && interleavable(w.qtype())
        && w.is_interleaved()
        && acts.has_q16()
        && m >= TILE_ROWS
        && acts.rows >= m
        && acts.cols == w.cols()
}

/// `c[m, n] = x[m, k] · wᵀ` on AMX, or false (nothing written) where it does not apply
/// ([`applies`]); same results, bit for bit, as `qmatmul_bt_with(Level::Avx2, ..)`.
pub fn qmatmul_bt_amx(
    x: &[f32],
    acts: &QuantizedActs,
    w: &QMatrix,
    c: &mut [f32],
    m: usize,
) -> bool {
    if !applies(acts, w, m) {
        return false;
    }
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "matmul: lhs is not [m, k]");
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    let nb = k / 32;
    let q16 = &acts.q16[..m * nb];
    // The last partial tile of activation rows, padded with zero rows (zero sums, zero
    // scales) so every tile load reads 16 whole rows.
    let whole = m / TILE_ROWS * TILE_ROWS;
    let mut tail = vec![EMPTY; TILE_ROWS * nb];
    tail[..(m - whole) * nb].copy_from_slice(&q16[whole * nb..]);
    let aq = a_tiles(q16, m, nb);
    let grouped = w.grouped_rows();
    let panels = grouped.div_ceil(PANEL);
    let c_addr = c.as_mut_ptr() as usize;
    let task = |p: usize| {
        if p == panels {
            // Rows past the last group, as the AVX2 path computes them.
            for j in grouped..n {
                for r in 0..m {
                    let v = dot_rows(dot::level(), w.qtype(), w.row(j), x, acts, [r])[0];
                    // SAFETY: r < m, j < n: inside c; only this task writes columns >= grouped.
                    unsafe { *(c_addr as *mut f32).add(r * n + j) = v };
                }
            }
            return;
        }
        let j0 = p * PANEL;
        let cols = (grouped - j0).min(PANEL);
        PANEL_BUF.with_borrow_mut(|buf| {
            // SAFETY: `applies` checked AMX-INT8 and AVX-512 (F, BW, VL) + FMA + F16C; the
            // panel holds rows j0..j0+cols of w, all inside c's n columns; only this task
            // writes columns j0..j0+cols.
            unsafe {
                let _tiles = amx::Tiles::load();
                unpack_panel(w, j0 / GROUP, cols / GROUP, buf);
                let tile_of = |r0: usize| {
                    if r0 < whole {
                        &q16[r0 * nb..(r0 + TILE_ROWS) * nb]
                    } else {
                        &tail[..]
                    }
                };
                for r0 in (0..m).step_by(TILE_ROWS) {
                    let out = tile_one(w.qtype(), buf, tile_of(r0), &aq[r0 * nb..], nb);
                    for (i, o) in out.iter().enumerate().take(m - r0) {
                        let dst = (c_addr as *mut f32).add((r0 + i) * n + j0);
                        std::ptr::copy_nonoverlapping(o.as_ptr(), dst, cols);
                    }
                }
            }
        });
    };
    let pieces = panels + usize::from(grouped < n);
    if rayon::current_num_threads() <= 1 || pieces <= 1 {
        (0..pieces).for_each(task);
    } else {
        (0..pieces).into_par_iter().for_each(task);
    }
    true
}

const EMPTY: BlockQ16 = BlockQ16 {
    d: 0.0,
    s: 0.0,
    qs: [0; 32],
};

/// One 64-byte tile row, on a cache line of its own (a row across two lines loads slower).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The `qs` bytes of the activations as A tiles: per tile of 16 rows (the last padded with
/// zero rows) and block, 16 aligned lines, so every A load reads 16 whole lines.
fn a_tiles(q16: &[BlockQ16], m: usize, nb: usize) -> Vec<Line> {
    let mut out = vec![Line([0; 64]); m.div_ceil(TILE_ROWS) * TILE_ROWS * nb];
    for (r, row) in q16.chunks_exact(nb).take(m).enumerate() {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        for (b, blk) in row.iter().enumerate() {
            let line = &mut out[(t * nb + b) * TILE_ROWS + i].0;
            for (pair, q) in line.chunks_exact_mut(2).zip(&blk.qs) {
                pair.copy_from_slice(&q.to_le_bytes());
            }
        }
    }
    out
}

/// One unpacked panel: per block column the B tiles, then the f32 scales and minima.
#[derive(Default)]
struct Panel {
    tiles: Vec<Line>,
    d: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static PANEL_BUF: RefCell<Panel> = RefCell::new(Panel::default());
}

/// Unpacks `groups` (1 or 2) interleaved groups from group `g0` of `w` into `out` (a missing
/// second group reads as zero weights and scales).
///
/// # Safety
/// AVX-512 F + BW, F16C.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn unpack_panel(w: &QMatrix, g0: usize, groups: usize, out: &mut Panel) {
    use std::arch::x86_64::*;
    let t = w.qtype();
    let nb = w.cols() / 32;
    let bb = t.block_bytes();
    // Every byte below is overwritten (`m` is read for Q4_1 / Q5_1 only), so no clearing.
    out.tiles.resize(nb * PANEL_BLOCK / 64, Line([0; 64]));
    out.d.resize(nb * PANEL, 0.0);
    out.m.resize(nb * PANEL, 0.0);
    let g: [&[u8]; 2] = [w.group(g0), if groups > 1 { w.group(g0 + 1) } else { &[] }];
    let zero = [0u8; 64];
    let lo_mask = _mm512_set1_epi32(0x00ff_00ff);
    let nib = _mm512_set1_epi32(0x0f0f_0f0f);
    for b in 0..nb {
        let gb = b * GROUP * bb;
        // 32 bytes at `off` of block column b of both groups, as one 16-lane vector.
        let load2 = |off: usize| {
            let p1 = if groups > 1 {
                &g[1][gb + off..]
            } else {
                &zero[..]
            };
            let lo = _mm256_loadu_si256(g[0][gb + off..gb + off + 32].as_ptr() as *const __m256i);
            let hi = _mm256_loadu_si256(p1[..32].as_ptr() as *const __m256i);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        };
        let load_ph = |off: usize| {
            let p1 = if groups > 1 {
                &g[1][gb + off..]
            } else {
                &zero[..]
            };
            let lo = _mm_loadu_si128(g[0][gb + off..gb + off + 16].as_ptr() as *const __m128i);
            let hi = _mm_loadu_si128(p1[..16].as_ptr() as *const __m128i);
            _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
        };
        _mm512_storeu_ps(out.d[b * PANEL..].as_mut_ptr(), load_ph(0));
        if matches!(t, QType::Q4_1 | QType::Q5_1) {
            _mm512_storeu_ps(out.m[b * PANEL..].as_mut_ptr(), load_ph(16));
        }
        let tiles = &mut out.tiles[b * PANEL_BLOCK / 64..(b + 1) * PANEL_BLOCK / 64];
        // Values 4q..4q+4 of all 16 rows (one byte each per 32-bit lane) into B rows 2q, 2q+1.
        let mut put = |q: usize, v: __m512i| {
            let even = _mm512_and_si512(v, lo_mask);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<8>(v), lo_mask);
            let rows = [
                (2 * q, even),
                (2 * q + 1, odd),
                (16 + 2 * q, _mm512_slli_epi32::<8>(even)),
                (16 + 2 * q + 1, _mm512_slli_epi32::<8>(odd)),
            ];
            for (row, v) in rows {
                _mm512_store_si512(tiles[row].0.as_mut_ptr() as *mut _, v);
            }
        };
        if t == QType::Q8_0 {
            for q in 0..8 {
                put(q, load2(16 + 32 * q));
            }
        } else if matches!(t, QType::Q5_0 | QType::Q5_1) {
            // The fifth bits of chunk q: bit q (low nibbles) and bit 4 + q (high nibbles)
            // of each byte of the regrouped high-bit lanes (`packed::q5_spread`), at bit 4.
            let (qh_off, off) = if t == QType::Q5_1 { (32, 64) } else { (16, 48) };
            let b4 = _mm512_set1_epi8(0x10);
            let qh = load2(qh_off);
            let (mut lo_bits, mut hi_bits) = (_mm512_slli_epi16::<4>(qh), qh);
            for q in 0..4 {
                let v = load2(off + 32 * q);
                let lo = _mm512_and_si512(v, nib);
                let hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), nib);
                put(q, _mm512_or_si512(lo, _mm512_and_si512(lo_bits, b4)));
                put(q + 4, _mm512_or_si512(hi, _mm512_and_si512(hi_bits, b4)));
                lo_bits = _mm512_srli_epi16::<1>(lo_bits);
                hi_bits = _mm512_srli_epi16::<1>(hi_bits);
            }
        } else {
            let off = if t == QType::Q4_1 { 32 } else { 16 };
            for q in 0..4 {
                let v = load2(off + 32 * q);
                put(q, _mm512_and_si512(v, nib));
                put(q + 4, _mm512_and_si512(_mm512_srli_epi32::<4>(v), nib));
            }
        }
    }
}

/// One step of [`tile_one`]: block `$b`'s A tile into `$a`, its sums into C tiles `$lo`,
/// `$hi`, and the previous block's C tiles `$plo`, `$phi` stored to `$prev` (the products of
/// one block overlap the stores of the one before).
macro_rules! block_step {
    ($t:expr, $a:literal, $lo:literal, $hi:literal, $plo:literal, $phi:literal,
     $at:expr, $bt:expr, $prev:expr) => {{
        crate::tile_load!($a, $at, 64usize);
        crate::tile_load!(2, $bt, 64usize);
        crate::tile_load!(3, $bt.add(PANEL_BLOCK / 2), 64usize);
        crate::tile_zero!($lo);
        crate::tile_zero!($hi);
        if $t == QType::Q8_0 {
            crate::tile_dp!("us", $lo, $a, 2);
            crate::tile_dp!("ss", $hi, $a, 3);
        } else {
            crate::tile_dp!("uu", $lo, $a, 2);
            crate::tile_dp!("su", $hi, $a, 3);
        }
        if let Some(sp) = $prev {
            let sp: *mut u8 = sp;
            crate::tile_store!($plo, sp, 64usize);
            crate::tile_store!($phi, sp.add(1024), 64usize);
        }
    }};
}

/// One C tile of results: activation rows `a` (16 rows, their `nb` blocks row after row;
/// their `qs` as A tiles in `lines`) x the 16 weight rows of `panel`. Tiles: A in 0 / 1 and
/// C in 4, 5 / 6, 7 by block parity, B in 2, 3; block b's products run while block b - 1's
/// sums are stored and block b - 2's are scaled by the vector unit.
///
/// # Safety
/// AMX-INT8 with the tile configuration loaded in this thread; AVX-512 F, FMA.
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn tile_one(
    t: QType,
    panel: &Panel,
    a: &[BlockQ16],
    lines: &[Line],
    nb: usize,
) -> [[f32; PANEL]; TILE_ROWS] {
    use std::arch::x86_64::*;
    assert!(a.len() >= TILE_ROWS * nb && lines.len() >= TILE_ROWS * nb);
    assert!(panel.tiles.len() * 64 >= nb * PANEL_BLOCK);
    #[repr(align(64))]
    struct Sums([i32; 4 * TILE_ROWS * PANEL]);
    // Halves by block parity: block b's sums are stored during block b + 1 and read during
    // block b + 2 (reading just-stored tile data back at once stalls).
    let mut sums = Sums([0; 4 * TILE_ROWS * PANEL]);
    let q = lines.as_ptr() as *const u8;
    let mut acc = [_mm512_setzero_ps(); TILE_ROWS];
    let sp = |sums: &mut Sums, b: usize| (sums.0.as_mut_ptr() as *mut u8).add(2048 * (b % 2));
    // The block scales of block b (sums in half b % 2) into the accumulators.
    let scale = |b: usize, sums: &Sums, acc: &mut [__m512; TILE_ROWS]| {
        let d = _mm512_loadu_ps(panel.d.as_ptr().add(b * PANEL));
        let base = sums.0.as_ptr().add(512 * (b % 2));
        for (i, acc) in acc.iter_mut().enumerate() {
            let lo = _mm512_load_si512(base.add(16 * i) as *const _);
            let hi = _mm512_load_si512(base.add(256 + 16 * i) as *const _);
            let sum = _mm512_add_epi32(_mm512_slli_epi32::<8>(hi), lo);
            let da = _mm512_set1_ps(a.get_unchecked(i * nb + b).d);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, da), *acc);
        }
    };
    for b in 0..nb {
        let bt = (panel.tiles.as_ptr() as *const u8).add(b * PANEL_BLOCK);
        let at = q.add(b * 1024);
        let prev = if b > 0 {
            Some(sp(&mut sums, b - 1))
        } else {
            None
        };
        // SAFETY: A reads the 16 lines of block b (inside `lines`); B reads inside the
        // panel; the stores write one 2 KiB half of `sums`.
        if b % 2 == 0 {
            block_step!(t, 0, 4, 5, 6, 7, at, bt, prev);
        } else {
            block_step!(t, 1, 6, 7, 4, 5, at, bt, prev);
        }
        if b > 1 {
            scale(b - 2, &sums, &mut acc);
        }
    }
    if nb > 0 {
        let last = sp(&mut sums, nb - 1);
        // SAFETY: the last block's C tiles into its half of `sums`.
        if nb % 2 == 1 {
            crate::tile_store!(4, last, 64usize);
            crate::tile_store!(5, last.add(1024), 64usize);
        } else {
            crate::tile_store!(6, last, 64usize);
            crate::tile_store!(7, last.add(1024), 64usize);
        }
        if nb > 1 {
            scale(nb - 2, &sums, &mut acc);
        }
        scale(nb - 1, &sums, &mut acc);
    }
    // The minimum terms, each row's chain in block order (as `dot_group16`), but block by
    // block across the rows so each panel vector is loaded once.
    let mut accm = [_mm512_setzero_ps(); TILE_ROWS];
    if t != QType::Q8_0 {
        let (mins, f) = match t {
            QType::Q4_0 => (&panel.d, -8.0),
            QType::Q5_0 => (&panel.d, -16.0),
            _ => (&panel.m, 1.0),
        };
        for b in 0..nb {
            let mv = _mm512_loadu_ps(mins.as_ptr().add(b * PANEL));
            for (i, accm) in accm.iter_mut().enumerate() {
                let s = _mm512_set1_ps(f * a.get_unchecked(i * nb + b).s);
                *accm = _mm512_fmadd_ps(mv, s, *accm);
            }
        }
    }
    let mut out = [[0f32; PANEL]; TILE_ROWS];
    for (i, o) in out.iter_mut().enumerate() {
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(acc[i], accm[i]));
    }
    out
}
