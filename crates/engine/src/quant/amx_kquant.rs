//! Prefill products `c = x · wᵀ` of the K-quants (Q4_K, Q5_K, Q6_K) with 8-bit 256-block
//! activations ([`BlockQ8K`]) on the AMX-INT8 tile unit.
//!
//! Per super-block of 256 the integer part is `Σ_j sc_j Σ_{i in j} q_i a_i` (Q6_K:
//! `sc_j (q_i - 32)`), so each weight is unpacked once per panel into the exact 16-bit value
//! `w = sc_j q_i` (|w| <= 63 * 31 for Q5_K, 128 * 32 for Q6_K), split into a signed high
//! byte and an unsigned low byte: two tile products (`tdpbssd`, `tdpbusd`) against the signed
//! activation bytes give `Σ w a = 256 Σ hi a + Σ lo a` for the whole super-block in int32,
//! exactly the integer sum of the row kernels. The weights are the A tiles (16 weight rows x
//! 64 values, their natural order), the activations the B tiles (transposed once per product
//! into the 4-byte column layout the tiles read). Then one f32 step per super-block:
//! `acc += (d d_a) isum`, for Q4_K / Q5_K `mins -= (dmin d_a) msum` with
//! `msum = Σ_j m_j (bsums_2j + bsums_2j+1)` (`dpwssd`), and `acc + mins` at the end.
//!
//! The row kernels keep 8 partial f32 lanes per row, so the f32 rounding differs from theirs
//! (the integer sums are the same): the tests hold both to the scalar reference within a
//! stated bound.

use super::act::{BlockQ8K, QuantizedActs};
use super::{ActKind, QMatrix, QType, QK_K};
use crate::amx::{self, TILE_ROWS};
use rayon::prelude::*;
use std::cell::RefCell;

/// Weight rows per panel (the 16 rows of one A tile).
const PANEL: usize = 16;
/// Tile lines per super-block of a panel: 4 chunks of 64 values x (high, low) x 16 rows.
const PANEL_SB: usize = 4 * 2 * TILE_ROWS;

/// Whether `t` is one of the K-quants this path takes.
pub fn takes(t: QType) -> bool {
    matches!(t, QType::Q4K | QType::Q5K | QType::Q6K)
}

/// Whether [`qmatmul_bt_amx`] takes this product.
pub fn applies(acts: &QuantizedActs, w: &QMatrix, m: usize) -> bool {
    amx::int8_available()
        && takes(w.qtype())
        && acts.has(ActKind::Q8K)
        && m >= TILE_ROWS
        && acts.rows >= m
        && acts.cols == w.cols()
        && w.cols().is_multiple_of(QK_K)
}

/// One 64-byte tile row on a cache line of its own.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const ZERO: Line = Line([0; 64]);

/// The activations as B tiles and per-tile vectors, built once per product.
struct Acts {
    /// Per (tile of 16 rows, super-block, chunk of 64 values): 16 lines, line `r` holding
    /// values `4r..4r+4` of the chunk for each of the 16 rows (4 bytes per row).
    b: Vec<Line>,
    /// Per (tile, super-block): the 16 rows' `d`.
    d: Vec<f32>,
    /// Per (tile, super-block, pair p): the 16 rows' `(S_2p, S_2p+1)` as two i16 in one
    /// i32, `S_j = bsums_2j + bsums_2j+1` (|S_j| <= 32 * 127).
    s: Vec<i32>,
    nsb: usize,
}

fn prepare_acts(q8k: &[BlockQ8K], m: usize, nsb: usize) -> Acts {
    let tiles = m.div_ceil(TILE_ROWS);
    let mut a = Acts {
        b: vec![ZERO; tiles * nsb * 4 * TILE_ROWS],
        d: vec![0.0; tiles * nsb * TILE_ROWS],
        s: vec![0; tiles * nsb * 4 * TILE_ROWS],
        nsb,
    };
    for (r, row) in q8k.chunks_exact(nsb).take(m).enumerate() {
        let (t, n) = (r / TILE_ROWS, r % TILE_ROWS);
        for (sb, blk) in row.iter().enumerate() {
            let ts = t * nsb + sb;
            a.d[ts * TILE_ROWS + n] = blk.d;
            for c in 0..4 {
                for l in 0..TILE_ROWS {
                    let src = &blk.qs[64 * c + 4 * l..64 * c + 4 * l + 4];
                    let line = &mut a.b[(ts * 4 + c) * TILE_ROWS + l].0;
                    for (o, &q) in line[4 * n..4 * n + 4].iter_mut().zip(src) {
                        *o = q as u8;
                    }
                }
            }
            for p in 0..4 {
                let s = |j: usize| (blk.bsums[2 * j] as i32 + blk.bsums[2 * j + 1] as i32) as i16;
                let pair = (s(2 * p) as u16 as u32) | ((s(2 * p + 1) as u16 as u32) << 16);
                a.s[(ts * 4 + p) * TILE_ROWS + n] = pair as i32;
            }
        }
    }
    a
}

/// One unpacked panel of 16 weight rows (rows past the matrix are zero).
#[derive(Default)]
struct Panel {
    /// Per super-block [`PANEL_SB`] lines: chunk c, then high / low bytes, then 16 rows.
    a: Vec<Line>,
    /// Per (super-block, row): `d`, `dmin` (0 for Q6_K).
    d: Vec<f32>,
    dmin: Vec<f32>,
    /// Per (super-block, row, pair p): `(m_2p, m_2p+1)` as two i16 in one i32.
    m: Vec<i32>,
}

thread_local! {
    static PANEL_BUF: RefCell<Panel> = RefCell::new(Panel::default());
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 256 exact weights `sc_j q_i` (Q6_K: `sc_j (q_i - 32)`) of one super-block, and for
/// Q4_K / Q5_K its 8 mins. Loops over 16 or 32 contiguous values (they vectorize).
fn superblock_weights(t: QType, b: &[u8], w: &mut [i16; QK_K]) -> [u8; 8] {
    match t {
        QType::Q6K => {
            for h in 0..2 {
                let ql = &b[64 * h..64 * h + 64];
                let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                // Quarter k of the half: low nibbles of ql[0..32] / ql[32..64], then the high
                // nibbles; bits 2k, 2k + 1 of qh on top.
                for k in 0..4 {
                    let (lq, shift) = (&ql[32 * (k % 2)..32 * (k % 2) + 32], 4 * (k / 2));
                    for g in 0..2 {
                        let v0 = 128 * h + 32 * k + 16 * g;
                        let sc = b[192 + v0 / 16] as i8 as i16;
                        let out = &mut w[v0..v0 + 16];
                        let (lq, qh) = (&lq[16 * g..16 * g + 16], &qh[16 * g..16 * g + 16]);
                        for ((o, &l), &hb) in out.iter_mut().zip(lq).zip(qh) {
                            let q = ((l >> shift) & 0x0f) | (((hb >> (2 * k)) & 3) << 4);
                            *o = sc * (q as i16 - 32);
                        }
                    }
                }
            }
            [0; 8]
        }
        _ => {
            let five = t == QType::Q5K;
            let (sc, m) = super::scalar::scales_mins_k4(&b[4..16]);
            let qs = if five { &b[48..176] } else { &b[16..144] };
            for c in 0..4 {
                for l in 0..32 {
                    let byte = qs[32 * c + l];
                    let (mut lo, mut hi) = (byte & 0x0f, byte >> 4);
                    if five {
                        lo |= ((b[16 + l] >> (2 * c)) & 1) << 4;
                        hi |= ((b[16 + l] >> (2 * c + 1)) & 1) << 4;
                    }
                    w[64 * c + l] = sc[2 * c] as i16 * lo as i16;
                    w[64 * c + 32 + l] = sc[2 * c + 1] as i16 * hi as i16;
                }
            }
            m
        }
    }
}

/// Unpacks weight rows `j0..j0 + rows` (rows <= 16) of `w` into `out`.
fn unpack_panel(w: &QMatrix, j0: usize, rows: usize, out: &mut Panel) {
    let t = w.qtype();
    let nsb = w.cols() / QK_K;
    let bb = t.block_bytes();
    out.a.clear();
    out.a.resize(nsb * PANEL_SB, ZERO);
    out.d.clear();
    out.d.resize(nsb * PANEL, 0.0);
    out.dmin.clear();
    out.dmin.resize(nsb * PANEL, 0.0);
    out.m.clear();
    out.m.resize(nsb * PANEL * 4, 0);
    let mut wv = [0i16; QK_K];
    for r in 0..rows {
        let row = w.row(j0 + r);
        for sb in 0..nsb {
            let b = &row[sb * bb..(sb + 1) * bb];
            if t == QType::Q6K && VECTOR_Q6K {
                // SAFETY: `applies` checked AVX-512 F + BW (`int8_available`).
                unsafe { q6k_planes(b, &mut out.a[sb * PANEL_SB..(sb + 1) * PANEL_SB], r) };
                out.d[sb * PANEL + r] = f16_at(b, 208);
                continue;
            }
            if t != QType::Q6K && VECTOR_Q45K {
                let (sc, m) = super::scalar::scales_mins_k4(&b[4..16]);
                let lines = &mut out.a[sb * PANEL_SB..(sb + 1) * PANEL_SB];
                // SAFETY: `applies` checked AVX-512 F + BW (`int8_available`).
                unsafe { q45k_planes(t == QType::Q5K, b, &sc, lines, r) };
                let i = sb * PANEL + r;
                out.d[i] = f16_at(b, 0);
                out.dmin[i] = f16_at(b, 2);
                for p in 0..4 {
                    out.m[i * 4 + p] = (m[2 * p] as u32 | (m[2 * p + 1] as u32) << 16) as i32;
                }
                continue;
            }
            let m = superblock_weights(t, b, &mut wv);
            for c in 0..4 {
                let base = sb * PANEL_SB + c * 2 * TILE_ROWS;
                let vals = &wv[64 * c..64 * c + 64];
                let hi = &mut out.a[base + r].0;
                for (o, &v) in hi.iter_mut().zip(vals) {
                    *o = (v >> 8) as u8;
                }
                let lo = &mut out.a[base + TILE_ROWS + r].0;
                for (o, &v) in lo.iter_mut().zip(vals) {
                    *o = v as u8;
                }
            }
            let i = sb * PANEL + r;
            if t == QType::Q6K {
                out.d[i] = f16_at(b, 208);
            } else {
                out.d[i] = f16_at(b, 0);
                out.dmin[i] = f16_at(b, 2);
                for p in 0..4 {
                    out.m[i * 4 + p] = (m[2 * p] as u32 | (m[2 * p + 1] as u32) << 16) as i32;
                }
            }
        }
    }
}

/// `c[m, n] = x[m, k] · wᵀ` on AMX for the K-quants, or false (nothing written) where it
/// does not apply ([`applies`]).
pub fn qmatmul_bt_amx(acts: &QuantizedActs, w: &QMatrix, c: &mut [f32], m: usize) -> bool {
    if !applies(acts, w, m) {
        return false;
    }
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    let nsb = k / QK_K;
    let a = prepare_acts(&acts.q8k[..m * nsb], m, nsb);
    let tiles = m.div_ceil(TILE_ROWS);
    let panels = n.div_ceil(PANEL);
    let c_addr = c.as_mut_ptr() as usize;
    let t = w.qtype();
    let task = |p: usize| {
        let j0 = p * PANEL;
        let cols = (n - j0).min(PANEL);
        PANEL_BUF.with_borrow_mut(|buf| {
            unpack_panel(w, j0, cols, buf);
            // SAFETY: `applies` checked AMX-INT8 and AVX-512 (F, BW, VL) + FMA + F16C
            // (`int8_available`); each write goes to a row < m and a column j0..j0+cols < n,
            // and only this task writes those columns.
            unsafe {
                let _tiles = amx::Tiles::load();
                for t0 in (0..tiles).step_by(2) {
                    let two = t0 + 1 < tiles;
                    let out = tile_pair(t, buf, &a, [t0, if two { t0 + 1 } else { t0 }], two);
                    for (k, o) in out.iter().enumerate().take(1 + two as usize) {
                        let r0 = (t0 + k) * TILE_ROWS;
                        for (j, col) in o.iter().enumerate().take(cols) {
                            for (i, &v) in col.iter().enumerate().take(m.saturating_sub(r0)) {
                                *(c_addr as *mut f32).add((r0 + i) * n + j0 + j) = v;
                            }
                        }
                    }
                }
            }
        });
    };
    if rayon::current_num_threads() <= 1 || panels <= 1 {
        (0..panels).for_each(task);
    } else {
        (0..panels).into_par_iter().for_each(task);
    }
    true
}

/// Results of the panel's 16 weight rows (outer index) x activation tiles `at[0]` and, where
/// `two`, `at[1]` (16 rows each, inner index). Tiles: 0 / 1 the weights' high / low bytes,
/// 2 / 3 the two activation tiles, 4, 5 / 6, 7 their high / low sums; the B loads of both
/// activation tiles share each pair of A loads.
///
/// # Safety
/// AMX-INT8 with the tile configuration loaded in this thread; AVX-512 F + BW, FMA.
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn tile_pair(
    t: QType,
    panel: &Panel,
    a: &Acts,
    at: [usize; 2],
    two: bool,
) -> [[[f32; TILE_ROWS]; PANEL]; 2] {
    use std::arch::x86_64::*;
    let nsb = a.nsb;
    assert!(panel.a.len() >= nsb * PANEL_SB && panel.d.len() >= nsb * PANEL);
    assert!(at
        .iter()
        .all(|&t| a.b.len() >= (t + 1) * nsb * 4 * TILE_ROWS));
    #[repr(align(64))]
    struct Sums([i32; 2 * 4 * TILE_ROWS * PANEL]);
    // Halves by super-block parity: the f32 code reads super-block s - 1's sums while the
    // tile unit works on s.
    let mut sums = Sums([0; 2 * 4 * TILE_ROWS * PANEL]);
    let mut acc = [[_mm512_setzero_ps(); PANEL]; 2];
    let mut mins = [[_mm512_setzero_ps(); PANEL]; 2];
    let ntiles = 1 + two as usize;
    let scale =
        |s: usize, sums: &Sums, acc: &mut [[__m512; PANEL]; 2], mins: &mut [[__m512; PANEL]; 2]| {
            for k in 0..ntiles {
                let ts = at[k] * nsb + s;
                let da = _mm512_loadu_ps(a.d.as_ptr().add(ts * TILE_ROWS));
                let base = sums.0.as_ptr().add(1024 * (s % 2) + 512 * k);
                let sp: [__m512i; 4] = std::array::from_fn(|p| {
                    _mm512_loadu_si512(a.s.as_ptr().add((ts * 4 + p) * TILE_ROWS) as *const _)
                });
                for r in 0..PANEL {
                    let hi = _mm512_load_si512(base.add(16 * r) as *const _);
                    let lo = _mm512_load_si512(base.add(256 + 16 * r) as *const _);
                    let isum = _mm512_add_epi32(_mm512_slli_epi32::<8>(hi), lo);
                    let i = s * PANEL + r;
                    let dd = _mm512_mul_ps(_mm512_set1_ps(*panel.d.get_unchecked(i)), da);
                    acc[k][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), dd, acc[k][r]);
                    if t != QType::Q6K {
                        let mut msum = _mm512_setzero_si512();
                        for (p, sp) in sp.iter().enumerate() {
                            let mw = _mm512_set1_epi32(*panel.m.get_unchecked(i * 4 + p));
                            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mw, *sp));
                        }
                        let dm = _mm512_mul_ps(_mm512_set1_ps(*panel.dmin.get_unchecked(i)), da);
                        mins[k][r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), dm, mins[k][r]);
                    }
                }
            }
        };
    let wa = panel.a.as_ptr() as *const u8;
    let b0 = a.b.as_ptr().add(at[0] * nsb * 4 * TILE_ROWS) as *const u8;
    let b1 = a.b.as_ptr().add(at[1] * nsb * 4 * TILE_ROWS) as *const u8;
    for s in 0..nsb {
        crate::tile_zero!(4);
        crate::tile_zero!(5);
        if two {
            crate::tile_zero!(6);
            crate::tile_zero!(7);
        }
        for c in 0..4 {
            let wl = wa.add((s * PANEL_SB + c * 2 * TILE_ROWS) * 64);
            let bl = (s * 4 + c) * TILE_ROWS * 64;
            // SAFETY: A reads 16 lines of the panel, B 16 lines of an activation tile, all
            // inside the buffers (asserted above).
            crate::tile_load!(0, wl, 64usize);
            crate::tile_load!(1, wl.add(TILE_ROWS * 64), 64usize);
            crate::tile_load!(2, b0.add(bl), 64usize);
            crate::tile_dp!("ss", 4, 0, 2);
            crate::tile_dp!("us", 5, 1, 2);
            if two {
                crate::tile_load!(3, b1.add(bl), 64usize);
                crate::tile_dp!("ss", 6, 0, 3);
                crate::tile_dp!("us", 7, 1, 3);
            }
        }
        let sp = (sums.0.as_mut_ptr() as *mut u8).add(4096 * (s % 2));
        // SAFETY: four 1 KiB stores into this super-block's half of `sums`.
        crate::tile_store!(4, sp, 64usize);
        crate::tile_store!(5, sp.add(1024), 64usize);
        if two {
            crate::tile_store!(6, sp.add(2048), 64usize);
            crate::tile_store!(7, sp.add(3072), 64usize);
        }
        if s > 0 {
            scale(s - 1, &sums, &mut acc, &mut mins);
        }
    }
    if nsb > 0 {
        scale(nsb - 1, &sums, &mut acc, &mut mins);
    }
    let mut out = [[[0f32; TILE_ROWS]; PANEL]; 2];
    for k in 0..ntiles {
        for (r, o) in out[k].iter_mut().enumerate() {
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(acc[k][r], mins[k][r]));
        }
    }
    out
}

/// Whether Q6_K super-blocks unpack with [`q6k_planes`] (else [`superblock_weights`]).
const VECTOR_Q6K: bool = true;
/// Whether Q4_K / Q5_K super-blocks unpack with [`q45k_planes`].
const VECTOR_Q45K: bool = true;

/// One Q4_K (`five` false) or Q5_K super-block into the lines of weight row `r`, as
/// [`q6k_planes`]: chunk c's 32 bytes give values `64c..64c+32` (low nibbles, scale
/// `sc[2c]`) and `64c+32..64c+64` (high nibbles, `sc[2c+1]`); Q5_K's fifth bits are bits
/// 2c / 2c + 1 of the 32 `qh` bytes.
///
/// # Safety
/// AVX-512 F + BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q45k_planes(five: bool, b: &[u8], sc: &[u8; 8], out: &mut [Line], r: usize) {
    use std::arch::x86_64::*;
    let qs_off = if five { 48 } else { 16 };
    assert!(b.len() >= qs_off + 128 && out.len() >= PANEL_SB && r < TILE_ROWS);
    let ld = |at: usize| _mm256_loadu_si256(b[at..at + 32].as_ptr() as *const __m256i);
    let m4 = _mm256_set1_epi8(0x0f);
    let m1 = _mm256_set1_epi8(1);
    let qh = if five { ld(16) } else { _mm256_setzero_si256() };
    for c in 0..4 {
        let raw = ld(qs_off + 32 * c);
        for half in 0..2 {
            let j = 2 * c + half;
            let nib = _mm256_srlv_epi16(raw, _mm256_set1_epi16(4 * half as i16));
            let mut q = _mm256_and_si256(nib, m4);
            if five {
                let bit = _mm256_srlv_epi16(qh, _mm256_set1_epi16(j as i16));
                q = _mm256_or_si256(q, _mm256_slli_epi16::<4>(_mm256_and_si256(bit, m1)));
            }
            let scale = _mm512_set1_epi16(sc[j] as i16);
            let w = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(q), scale);
            let hi = _mm512_cvtepi16_epi8(_mm512_srai_epi16::<8>(w));
            let lo = _mm512_cvtepi16_epi8(w);
            let at = 32 * half;
            let line = |plane: usize| c * 2 * TILE_ROWS + plane * TILE_ROWS + r;
            _mm256_storeu_si256(out[line(0)].0[at..at + 32].as_mut_ptr() as *mut __m256i, hi);
            _mm256_storeu_si256(out[line(1)].0[at..at + 32].as_mut_ptr() as *mut __m256i, lo);
        }
    }
}

/// One Q6_K super-block (`b`, 210 bytes) straight into the high / low byte lines of weight row
/// `r` of its panel lines `out` ([`PANEL_SB`]): the values of [`superblock_weights`], 32 at a
/// time (a quarter of a half: one scale per 16).
///
/// # Safety
/// AVX-512 F + BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q6k_planes(b: &[u8], out: &mut [Line], r: usize) {
    use std::arch::x86_64::*;
    assert!(b.len() >= 210 && out.len() >= PANEL_SB && r < TILE_ROWS);
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(3);
    let off = _mm512_set1_epi16(32);
    for h in 0..2 {
        let ld = |at: usize| _mm256_loadu_si256(b[at..at + 32].as_ptr() as *const __m256i);
        let (ql0, ql1, qh) = (ld(64 * h), ld(64 * h + 32), ld(128 + 32 * h));
        for k in 0..4 {
            let low = if k % 2 == 0 { ql0 } else { ql1 };
            let nib = if k < 2 {
                low
            } else {
                _mm256_srli_epi16::<4>(low)
            };
            let hb = _mm256_srlv_epi16(qh, _mm256_set1_epi16(2 * k as i16));
            let q = _mm256_or_si256(
                _mm256_and_si256(nib, m4),
                _mm256_slli_epi16::<4>(_mm256_and_si256(hb, m3)),
            );
            let v0 = 128 * h + 32 * k;
            let s0 = b[192 + v0 / 16] as i8 as i16;
            let s1 = b[193 + v0 / 16] as i8 as i16;
            let sc = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi16(s0)),
                _mm256_set1_epi16(s1),
            );
            let w = _mm512_mullo_epi16(_mm512_sub_epi16(_mm512_cvtepu8_epi16(q), off), sc);
            let (c, at) = (v0 / 64, v0 % 64);
            let hi = _mm512_cvtepi16_epi8(_mm512_srai_epi16::<8>(w));
            let lo = _mm512_cvtepi16_epi8(w);
            let line = |plane: usize| c * 2 * TILE_ROWS + plane * TILE_ROWS + r;
            _mm256_storeu_si256(out[line(0)].0[at..at + 32].as_mut_ptr() as *mut __m256i, hi);
            _mm256_storeu_si256(out[line(1)].0[at..at + 32].as_mut_ptr() as *mut __m256i, lo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector unpacking gives the bytes of the scalar weights, on random blocks (every
    /// 4/5/6-bit value and scale occurs).
    #[test]
    fn vector_planes_equal_the_scalar_weights() {
        if !amx::int8_available() {
            eprintln!("note: no AMX-INT8 / AVX-512 here; Q6_K unpack test skipped");
            return;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for r in [0, 5, 15] {
            let b: Vec<u8> = (0..210)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for t in [QType::Q4K, QType::Q5K, QType::Q6K] {
                let mut w = [0i16; QK_K];
                superblock_weights(t, &b, &mut w);
                let mut lines = vec![ZERO; PANEL_SB];
                // SAFETY: AVX-512 F + BW checked above.
                unsafe {
                    if t == QType::Q6K {
                        q6k_planes(&b, &mut lines, r);
                    } else {
                        let (sc, _) = super::super::scalar::scales_mins_k4(&b[4..16]);
                        q45k_planes(t == QType::Q5K, &b, &sc, &mut lines, r);
                    }
                }
                for (v, &wv) in w.iter().enumerate() {
                    let (c, i) = (v / 64, v % 64);
                    let hi = lines[c * 2 * TILE_ROWS + r].0[i];
                    let lo = lines[c * 2 * TILE_ROWS + TILE_ROWS + r].0[i];
                    let got = ((hi as i8 as i16) << 8) | lo as i16;
                    assert_eq!(got, wv, "{} row {r} value {v}", t.name());
                }
            }
        }
    }
}
