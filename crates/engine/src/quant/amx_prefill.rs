//! Prefill products `c = x · wᵀ` of the interleaved 32-block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1) with 16-bit activations ([`BlockQ16`]) on the AMX-INT8 tile unit, bit-identical to
//! the AVX2 kernels `x86::dot_group16` / `x86_q5::dot_group16`.
//!
//! AMX multiplies bytes only, so each 16-bit activation `a = 256 * hi + lo` (its two
//! little-endian bytes: `lo` unsigned, `hi` signed) meets its weight twice. An A tile is 16
//! activation rows x one block's 64 raw bytes of `qs`, read straight from the prepared
//! activations; the weights of 16 rows (two groups) are unpacked once per panel into two B
//! tiles per block, one holding each weight beside a zero at the `lo` byte positions, one at
//! the `hi` positions. The two int32 products give the exact block sum `256 * hi + lo`; the
//! block scales then follow `dot_group16`'s f32 operations in the same order (one fma per
//! block, the minimum term in its own chain, one final add).

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
                for r0 in (0..m).step_by(2 * TILE_ROWS) {
                    let two = r0 + TILE_ROWS < m;
                    let src = [tile_of(r0), tile_of(if two { r0 + TILE_ROWS } else { r0 })];
                    let out = tile_pair(w.qtype(), buf, src, two, nb);
                    for (i, o) in out.iter().flatten().enumerate().take(m - r0) {
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

/// One unpacked panel: per block column the B tiles, then the f32 scales and minima.
#[derive(Default)]
struct Panel {
    tiles: Vec<u8>,
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
    out.tiles.resize(nb * PANEL_BLOCK, 0);
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
        let tiles = &mut out.tiles[b * PANEL_BLOCK..(b + 1) * PANEL_BLOCK];
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
                _mm512_storeu_si512(tiles[64 * row..64 * row + 64].as_mut_ptr() as *mut _, v);
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

/// Two C tiles of results: activation rows `a[0]` and `a[1]` (16 rows each, their `nb` blocks
/// row after row) x the 16 weight rows of `panel`; `a[1]` only where `two`. Two tiles share
/// each B load and keep the tile unit busy while the other's sums are stored.
///
/// # Safety
/// AMX-INT8 with the tile configuration loaded in this thread; AVX-512 F, FMA.
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn tile_pair(
    t: QType,
    panel: &Panel,
    a: [&[BlockQ16]; 2],
    two: bool,
    nb: usize,
) -> [[[f32; PANEL]; TILE_ROWS]; 2] {
    use std::arch::x86_64::*;
    assert!(a.iter().all(|a| a.len() >= TILE_ROWS * nb));
    assert!(panel.tiles.len() >= nb * PANEL_BLOCK);
    #[repr(align(64))]
    struct Sums([i32; 8 * TILE_ROWS * PANEL]);
    // Two halves: the tile unit stores block b's sums while the f32 code reads block b - 1's
    // (reading just-stored tile data back at once stalls).
    let mut sums = Sums([0; 8 * TILE_ROWS * PANEL]);
    let bsz = std::mem::size_of::<BlockQ16>();
    let stride = nb * bsz;
    let qoff = std::mem::offset_of!(BlockQ16, qs);
    let q0 = (a[0].as_ptr() as *const u8).add(qoff);
    let q1 = (a[1].as_ptr() as *const u8).add(qoff);
    let mut acc = [[_mm512_setzero_ps(); TILE_ROWS]; 2];
    let tiles = if two { 2 } else { 1 };
    // The block scales of block b (sums in half b % 2) into the accumulators.
    let scale = |b: usize, sums: &Sums, acc: &mut [[__m512; TILE_ROWS]; 2]| {
        let d = _mm512_loadu_ps(panel.d.as_ptr().add(b * PANEL));
        for (k, acc) in acc.iter_mut().enumerate().take(tiles) {
            let base = sums.0.as_ptr().add(1024 * (b % 2) + 512 * k);
            for (i, acc) in acc.iter_mut().enumerate() {
                let lo = _mm512_load_si512(base.add(16 * i) as *const _);
                let hi = _mm512_load_si512(base.add(256 + 16 * i) as *const _);
                let sum = _mm512_add_epi32(_mm512_slli_epi32::<8>(hi), lo);
                let da = _mm512_set1_ps(a[k].get_unchecked(i * nb + b).d);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, da), *acc);
            }
        }
    };
    for b in 0..nb {
        let sp = (sums.0.as_mut_ptr() as *mut u8).add(4096 * (b % 2));
        let bt = panel.tiles.as_ptr().add(b * PANEL_BLOCK);
        // SAFETY: A reads 16 rows of 64 bytes at qs of block b of each row (inside `a`); B
        // and the stores stay inside the panel and `sums` (4 x 1 KiB).
        crate::tile_load!(1, bt, 64usize);
        crate::tile_load!(2, bt.add(PANEL_BLOCK / 2), 64usize);
        crate::tile_load!(0, q0.add(b * bsz), stride);
        crate::tile_zero!(3);
        crate::tile_zero!(4);
        if two {
            crate::tile_load!(5, q1.add(b * bsz), stride);
            crate::tile_zero!(6);
            crate::tile_zero!(7);
        }
        if t == QType::Q8_0 {
            crate::tile_dp!("us", 3, 0, 1);
            crate::tile_dp!("ss", 4, 0, 2);
            if two {
                crate::tile_dp!("us", 6, 5, 1);
                crate::tile_dp!("ss", 7, 5, 2);
            }
        } else {
            crate::tile_dp!("uu", 3, 0, 1);
            crate::tile_dp!("su", 4, 0, 2);
            if two {
                crate::tile_dp!("uu", 6, 5, 1);
                crate::tile_dp!("su", 7, 5, 2);
            }
        }
        crate::tile_store!(3, sp, 64usize);
        crate::tile_store!(4, sp.add(1024), 64usize);
        if two {
            crate::tile_store!(6, sp.add(2048), 64usize);
            crate::tile_store!(7, sp.add(3072), 64usize);
        }
        if b > 0 {
            scale(b - 1, &sums, &mut acc);
        }
    }
    if nb > 0 {
        scale(nb - 1, &sums, &mut acc);
    }
    let mut out = [[[0f32; PANEL]; TILE_ROWS]; 2];
    for k in 0..tiles {
        for (i, o) in out[k].iter_mut().enumerate() {
            let mut accm = _mm512_setzero_ps();
            if t != QType::Q8_0 {
                let (mins, f) = match t {
                    QType::Q4_0 => (&panel.d, -8.0),
                    QType::Q5_0 => (&panel.d, -16.0),
                    _ => (&panel.m, 1.0),
                };
                for b in 0..nb {
                    let s = _mm512_set1_ps(f * a[k].get_unchecked(i * nb + b).s);
                    let mv = _mm512_loadu_ps(mins.as_ptr().add(b * PANEL));
                    accm = _mm512_fmadd_ps(mv, s, accm);
                }
            }
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(acc[k][i], accm));
        }
    }
    out
}
