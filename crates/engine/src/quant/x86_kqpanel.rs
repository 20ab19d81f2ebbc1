//! AVX-512 VNNI prefill for the K-quants (Q4_K, Q5_K, Q6_K) over panels of 16 weight rows
//! unpacked once per product: in a panel every 32-bit lane is one row, holding 4 consecutive
//! values as bytes, so one `vpdpbusd` against a broadcast activation word advances the dots
//! of 16 rows by 4 values each, with no shuffles, no horizontal sums and no per-row
//! overhead. The row kernels instead unpack each weight row for every tile of activation
//! rows and reduce 8 lanes per super-block and row (SmolLM2's down projection on Zen 4, one
//! thread: 33–35 GMAC/s there; `cargo run --release -p engine --example quant_prefill`).
//!
//! Per super-block and activation row: the sub-block dots (exact i32) times the per-row
//! sub-block scales (`vpmulld`), the mins (Q4_K / Q5_K) or the offset of 32 (Q6_K) against
//! the activation's 16-value sums through `vpdpwssd` on scale pairs, then the f32 steps of
//! `scalar::dot_q8k` in its order: every output equals the scalar reference bit for bit.

// Index loops over lanes and words read closer to the block layouts than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::act::BlockQ8K;
use super::{QMatrix, QType, QK_K};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows per panel (one per 32-bit lane of a 512-bit register).
pub const LANES: usize = 16;

/// Activation rows that meet each load of a panel word.
const TILE: usize = 4;

/// One super-block of 16 rows, unpacked (5.6 KiB; a panel of SmolLM2's 1536-deep rows is 34
/// KiB and stays in L1/L2 while every activation row passes).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelBlock {
    /// Word `w`, lane `l`: values `4w..4w + 4` of row `l` (unsigned: 4, 5 or 6 bits).
    q: [[u8; 64]; 64],
    /// Sub-block scales per lane: Q4_K / Q5_K the 8 unsigned 6-bit scales, Q6_K the 16
    /// signed 8-bit ones.
    sc: [[i32; LANES]; 16],
    /// i16 pairs per lane against activation sum word `j` (`bsums[2j], bsums[2j + 1]`):
    /// Q4_K / Q5_K `(m_j, m_j)`, Q6_K `(sc_2j, sc_2j+1)`.
    pairs: [[i32; LANES]; 8],
    d: [f32; LANES],
    dmin: [f32; LANES],
}

const EMPTY: PanelBlock = PanelBlock {
    q: [[0; 64]; 64],
    sc: [[0; LANES]; 16],
    pairs: [[0; LANES]; 8],
    d: [0.0; LANES],
    dmin: [0.0; LANES],
};

thread_local! {
    /// Each thread's panel, reused across products.
    static PANEL: RefCell<Vec<PanelBlock>> = const { RefCell::new(Vec::new()) };
}

/// Whether this route takes `t`.
pub fn takes(t: QType) -> bool {
    matches!(t, QType::Q4K | QType::Q5K | QType::Q6K)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 256 values of one K-quant super-block `b` of type `t`, as bytes (`scalar::k_value`'s
/// layout, in loops the compiler vectorizes).
fn unpack_values(t: QType, b: &[u8], v: &mut [u8; QK_K]) {
    match t {
        QType::Q4K | QType::Q5K => {
            let qs = if t == QType::Q4K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            for c in 0..4 {
                for i in 0..32 {
                    let byte = qs[32 * c + i];
                    v[64 * c + i] = byte & 0x0f;
                    v[64 * c + 32 + i] = byte >> 4;
                }
                if t == QType::Q5K {
                    let qh = &b[16..48];
                    for i in 0..32 {
                        v[64 * c + i] |= ((qh[i] >> (2 * c)) & 1) << 4;
                        v[64 * c + 32 + i] |= ((qh[i] >> (2 * c + 1)) & 1) << 4;
                    }
                }
            }
        }
        _ => {
            for h in 0..2 {
                let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..160 + 32 * h]);
                let o = &mut v[128 * h..128 * h + 128];
                for l in 0..32 {
                    o[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                    o[32 + l] = (ql[32 + l] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                    o[64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    o[96 + l] = (ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
        }
    }
}

/// Two i16 values as one 32-bit `vpdpwssd` pair.
fn pair(lo: i32, hi: i32) -> i32 {
    (lo as i16 as u16 as u32 | (hi as i16 as u16 as u32) << 16) as i32
}

/// Unpacks rows `j0 .. j0 + rows` (`rows <= LANES`) of `w` into `panel` (one entry per
/// super-block; lanes past `rows` stay zero).
fn pack(w: &QMatrix, j0: usize, rows: usize, panel: &mut Vec<PanelBlock>) {
    let t = w.qtype();
    let (nb, bb) = (w.cols() / QK_K, t.block_bytes());
    panel.clear();
    panel.resize(nb, EMPTY);
    let mut v = [0u8; QK_K];
    for l in 0..rows {
        let row = w.row(j0 + l);
        for (blk, p) in row.chunks_exact(bb).zip(panel.iter_mut()) {
            unpack_values(t, blk, &mut v);
            for (word, q) in v.chunks_exact(4).zip(p.q.iter_mut()) {
                q[4 * l..4 * l + 4].copy_from_slice(word);
            }
            if t == QType::Q6K {
                let sc = |g: usize| (blk[192 + g] as i8) as i32;
                for g in 0..16 {
                    p.sc[g][l] = sc(g);
                }
                for j in 0..8 {
                    p.pairs[j][l] = pair(sc(2 * j), sc(2 * j + 1));
                }
                p.d[l] = f16_at(blk, 208);
            } else {
                let (sc, m) = super::scalar::scales_mins_k4(&blk[4..16]);
                for j in 0..8 {
                    p.sc[j][l] = sc[j] as i32;
                    p.pairs[j][l] = pair(m[j] as i32, m[j] as i32);
                }
                p.d[l] = f16_at(blk, 0);
                p.dmin[l] = f16_at(blk, 2);
            }
        }
    }
}

/// The activation word `w` (values `4w..4w + 4`) of `a` in every lane.
#[inline(always)]
unsafe fn word(a: &BlockQ8K, w: usize) -> __m512i {
    // SAFETY: w < 64, so the 4 bytes lie inside `qs` (256 bytes).
    _mm512_set1_epi32(unsafe { (a.qs.as_ptr().add(4 * w) as *const i32).read_unaligned() })
}

/// The activation sum pair `j` (`bsums[2j], bsums[2j + 1]`) of `a` in every lane.
#[inline(always)]
unsafe fn sum_pair(a: &BlockQ8K, j: usize) -> __m512i {
    // SAFETY: j < 8, so the 4 bytes lie inside `bsums` (16 i16).
    _mm512_set1_epi32(unsafe { (a.bsums.as_ptr().add(2 * j) as *const i32).read_unaligned() })
}

/// `out[r][l]` = row `l` of the panel · activation row `a[r]` (`R <= TILE` rows, `Q6`:
/// Q6_K, else Q4_K / Q5_K), in `scalar::dot_q8k`'s order.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const R: usize, const Q6: bool>(
    panel: &[PanelBlock],
    a: [&[BlockQ8K]; R],
) -> [__m512; R] {
    // Words per sub-block: 8 (32 values) for Q4_K / Q5_K, 4 (16 values) for Q6_K.
    let sub_words = if Q6 { 4 } else { 8 };
    let mut out = [_mm512_setzero_ps(); R];
    for (b, p) in panel.iter().enumerate() {
        // SAFETY: every activation row has the panel's `nb` blocks (checked by the caller).
        let ys: [&BlockQ8K; R] = std::array::from_fn(|r| unsafe { a[r].get_unchecked(b) });
        let mut isum = [_mm512_setzero_si512(); R];
        for s in 0..64 / sub_words {
            let mut sub = [_mm512_setzero_si512(); R];
            for w in s * sub_words..(s + 1) * sub_words {
                let q = _mm512_load_si512(p.q[w].as_ptr() as *const _);
                for r in 0..R {
                    sub[r] = _mm512_dpbusd_epi32(sub[r], q, word(ys[r], w));
                }
            }
            let sc = _mm512_load_si512(p.sc[s].as_ptr() as *const _);
            for r in 0..R {
                isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(sub[r], sc));
            }
        }
        let mut aux = [_mm512_setzero_si512(); R];
        for j in 0..8 {
            let pj = _mm512_load_si512(p.pairs[j].as_ptr() as *const _);
            for r in 0..R {
                aux[r] = _mm512_dpwssd_epi32(aux[r], pj, sum_pair(ys[r], j));
            }
        }
        let d = _mm512_load_ps(p.d.as_ptr());
        for r in 0..R {
            let da = _mm512_set1_ps(ys[r].d);
            let term = if Q6 {
                // (da * d) * (isum - 32 · offset sum)
                let i = _mm512_sub_epi32(isum[r], _mm512_slli_epi32::<5>(aux[r]));
                _mm512_mul_ps(_mm512_mul_ps(da, d), _mm512_cvtepi32_ps(i))
            } else {
                // da * (d * isum - dmin * msum)
                let dmin = _mm512_load_ps(p.dmin.as_ptr());
                let wsum = _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[r]));
                let msum = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(aux[r]));
                _mm512_mul_ps(da, _mm512_sub_ps(wsum, msum))
            };
            out[r] = _mm512_add_ps(out[r], term);
        }
    }
    out
}

/// Where a panel's results go: lanes `mask` of row `r` to `c[r * n + j0 ..]` of a `[m, n]`
/// output that this panel's task alone writes in those columns.
pub(super) struct PanelOut {
    c: *mut f32,
    m: usize,
    n: usize,
    j0: usize,
    mask: __mmask16,
}

impl PanelOut {
    /// Columns `j0 .. j0 + rows` (`rows <= 16`, `j0 + rows <= n`) of the `m * n` values at
    /// address `c` (an address, so the tasks' closures stay `Sync`).
    pub(super) fn new(c: usize, m: usize, n: usize, j0: usize, rows: usize) -> PanelOut {
        assert!(rows <= LANES && j0 + rows <= n);
        let mask = ((1u32 << rows) - 1) as __mmask16;
        PanelOut {
            c: c as *mut f32,
            m,
            n,
            j0,
            mask,
        }
    }

    /// Row `r`'s lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn put(&self, r: usize, v: __m512) {
        assert!(r < self.m);
        // SAFETY: r < m and the lanes of `mask` are columns j0..j0 + rows < n (checked in
        // `new`), inside c; no other task writes them.
        unsafe { _mm512_mask_storeu_ps(self.c.add(r * self.n + self.j0), self.mask, v) }
    }
}

/// Every activation row against the panel (tiles of [`TILE`], then single rows), each row's
/// results stored through `out`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run_rows<const Q6: bool>(
    panel: &[PanelBlock],
    acts: &super::QuantizedActs,
    m: usize,
    out: &PanelOut,
) {
    let row = |r: usize| acts.q8k_row(r);
    let mut r = 0;
    while r + TILE <= m {
        let v = tile::<TILE, Q6>(panel, [row(r), row(r + 1), row(r + 2), row(r + 3)]);
        for (i, o) in v.into_iter().enumerate() {
            out.put(r + i, o);
        }
        r += TILE;
    }
    while r < m {
        out.put(r, tile::<1, Q6>(panel, [row(r)])[0]);
        r += 1;
    }
}

/// `c[m, n] = x · wᵀ` for a K-quant `w` and activations prepared as 256-blocks, over panels
/// of [`LANES`] rows on the engine's team.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI (`Level::Avx512Vnni`).
pub unsafe fn matmul_bt(acts: &super::QuantizedActs, w: &QMatrix, c: &mut [f32], m: usize) {
    let (n, k) = (w.rows(), w.cols());
    assert!(
        takes(w.qtype()) && k.is_multiple_of(QK_K),
        "kq panel: not a K-quant matrix"
    );
    assert_eq!(c.len(), m * n, "matmul: dst is not [m, n]");
    assert!(
        acts.rows >= m && acts.cols == k && acts.has(super::ActKind::Q8K),
        "matmul: activations not prepared"
    );
    let q6 = w.qtype() == QType::Q6K;
    let c_addr = c.as_mut_ptr() as usize;
    let task = |p: usize| {
        let j0 = p * LANES;
        let out = PanelOut::new(c_addr, m, n, j0, LANES.min(n - j0));
        PANEL.with_borrow_mut(|panel| {
            pack(w, j0, LANES.min(n - j0), panel);
            // SAFETY: the caller guarantees the CPU features.
            unsafe {
                if q6 {
                    run_rows::<true>(panel, acts, m, &out)
                } else {
                    run_rows::<false>(panel, acts, m, &out)
                }
            }
        });
    };
    crate::team::for_each_index(n.div_ceil(LANES), task);
}
