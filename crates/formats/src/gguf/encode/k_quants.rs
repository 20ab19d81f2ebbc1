//! Q4_K, Q5_K and Q6_K encoders (super-blocks of 256 values).
//!
//! Q4_K/Q5_K: 8 sub-blocks of 32, each `x ≈ d·sc·q − dmin·m` with 6-bit `sc`, `m` and 4/5-bit
//! `q`. Q6_K: 16 sub-blocks of 16, `x ≈ d·sc·(q − 32)` with int8 `sc` and 6-bit `q`.
//! Steps: a least-squares fit per sub-block (`fit`), the sub-block scales quantized against
//! the super-block's f16 `d` (and `dmin`), then rounds of "levels for these scales" and
//! "best `d`, `dmin` for these levels" while the weighted error falls.

use super::fit;
use half::f16;

pub const QK_K: usize = 256;
/// Rounds of re-assigning levels and re-solving the super-block scales.
const SUPER_ROUNDS: usize = 3;

fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Packs eight 6-bit scales and mins into the 12 bytes Q4_K/Q5_K store.
fn pack_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut b = [0u8; 12];
    for j in 0..4 {
        b[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        b[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        b[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
    }
    b
}

/// Integer scale/min per sub-block and the f16 super-block factors, fitted as a whole.
struct KScales {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    mn: [u8; 8],
}

/// The 4- or 5-bit levels (`nmax` 15 or 31) of a Q4_K/Q5_K super-block and its scales.
fn fit_q45_k(x: &[f32], nmax: u8, q: &mut [u8; QK_K]) -> KScales {
    let mut w = [0f32; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        fit::weights(&x[r.clone()], &mut w[r.clone()]);
        let (s, b) = fit::fit_affine(&x[r.clone()], &w[r.clone()], nmax, &mut q[r]);
        scales[j] = s;
        mins[j] = -b;
    }
    let max_s = scales.iter().copied().fold(0f32, f32::max);
    let max_m = mins.iter().copied().fold(0f32, f32::max);
    let d = f16_round(max_s / 63.0);
    let dmin = f16_round(max_m / 63.0);
    let int6 = |v: f32, unit: f32| {
        if unit > 0.0 {
            (v / unit).round().clamp(0.0, 63.0) as u8
        } else {
            0
        }
    };
    let mut k = KScales {
        d,
        dmin,
        sc: std::array::from_fn(|j| int6(scales[j], d)),
        mn: std::array::from_fn(|j| int6(mins[j], dmin)),
    };
    let mut best_err = assign_q45_k(x, &w, &k, nmax, q);
    let mut cand = [0u8; QK_K];
    let mut a = [0f32; QK_K];
    let mut c = [0f32; QK_K];
    for _ in 0..SUPER_ROUNDS {
        for i in 0..QK_K {
            a[i] = (k.sc[i / 32] as u32 * q[i] as u32) as f32;
            c[i] = k.mn[i / 32] as f32;
        }
        let Some((d2, dmin2)) = fit::solve_two_scales(x, &w, &a, &c) else {
            break;
        };
        // Positive d, non-negative dmin (which also rules out NaN).
        if d2.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || dmin2.is_nan()
            || dmin2 < 0.0
        {
            break;
        }
        let trial = KScales {
            d: f16_round(d2),
            dmin: f16_round(dmin2),
            sc: k.sc,
            mn: k.mn,
        };
        let err = assign_q45_k(x, &w, &trial, nmax, &mut cand);
        if err >= best_err {
            break;
        }
        best_err = err;
        k = trial;
        q.copy_from_slice(&cand);
    }
    k
}

/// Nearest levels for the given scales; returns the weighted error.
fn assign_q45_k(x: &[f32], w: &[f32], k: &KScales, nmax: u8, q: &mut [u8; QK_K]) -> f32 {
    let mut y = [0f32; QK_K];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        let s = k.d * k.sc[j] as f32;
        let off = -k.dmin * k.mn[j] as f32;
        fit::assign_affine(&x[r.clone()], s, off, nmax, &mut q[r.clone()]);
        for i in r {
            y[i] = s * q[i] as f32 + off;
        }
    }
    fit::error(x, w, &y)
}

/// Q4_K: d, dmin (f16), 12 scale bytes, 128 bytes of nibbles (chunk c of 32 bytes holds
/// sub-block 2c in the low and 2c+1 in the high nibbles).
pub fn encode_q4_k(x: &[f32], out: &mut [u8]) {
    let mut q = [0u8; QK_K];
    let k = fit_q45_k(x, 15, &mut q);
    out[0..2].copy_from_slice(&f16::from_f32(k.d).to_le_bytes());
    out[2..4].copy_from_slice(&f16::from_f32(k.dmin).to_le_bytes());
    out[4..16].copy_from_slice(&pack_scales(&k.sc, &k.mn));
    for chunk in 0..4 {
        for l in 0..32 {
            out[16 + 32 * chunk + l] = q[64 * chunk + l] | (q[64 * chunk + 32 + l] << 4);
        }
    }
}

/// Q5_K: as Q4_K with 32 bytes of fifth bits after the scales (bit 2c of byte l: value
/// 64c+l, bit 2c+1: value 64c+32+l).
pub fn encode_q5_k(x: &[f32], out: &mut [u8]) {
    let mut q = [0u8; QK_K];
    let k = fit_q45_k(x, 31, &mut q);
    out[0..2].copy_from_slice(&f16::from_f32(k.d).to_le_bytes());
    out[2..4].copy_from_slice(&f16::from_f32(k.dmin).to_le_bytes());
    out[4..16].copy_from_slice(&pack_scales(&k.sc, &k.mn));
    out[16..48].iter_mut().for_each(|b| *b = 0);
    for chunk in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (q[64 * chunk + l], q[64 * chunk + 32 + l]);
            out[16 + l] |= ((lo >> 4) << (2 * chunk)) | ((hi >> 4) << (2 * chunk + 1));
            out[48 + 32 * chunk + l] = (lo & 0x0f) | ((hi & 0x0f) << 4);
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d (f16).
pub fn encode_q6_k(x: &[f32], out: &mut [u8]) {
    let mut w = [0f32; QK_K];
    let mut q = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (j, scale) in scales.iter_mut().enumerate() {
        let r = 16 * j..16 * j + 16;
        fit::weights(&x[r.clone()], &mut w[r.clone()]);
        *scale = fit::fit_symmetric(&x[r.clone()], &w[r.clone()], 32, &mut q[r]);
    }
    let peak = scales
        .iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    // The scale of largest magnitude maps to -128, the one extra level below zero.
    let mut d = f16_round(-peak / 128.0);
    let sc: [i8; 16] = std::array::from_fn(|j| {
        if d != 0.0 {
            (scales[j] / d).round().clamp(-128.0, 127.0) as i8
        } else {
            0
        }
    });
    let mut best_err = assign_q6_k(x, &w, d, &sc, &mut q);
    let mut cand = [0i8; QK_K];
    let mut a = [0f32; QK_K];
    for _ in 0..SUPER_ROUNDS {
        for i in 0..QK_K {
            a[i] = sc[i / 16] as f32 * q[i] as f32;
        }
        let Some(d2) = fit::solve_scale(x, &w, &a).map(f16_round) else {
            break;
        };
        let err = assign_q6_k(x, &w, d2, &sc, &mut cand);
        if err >= best_err {
            break;
        }
        best_err = err;
        d = d2;
        q.copy_from_slice(&cand);
    }
    for half in 0..2 {
        let v = |i: usize| (q[128 * half + i] + 32) as u8;
        for l in 0..32 {
            let (q1, q2, q3, q4) = (v(l), v(l + 32), v(l + 64), v(l + 96));
            out[64 * half + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            out[64 * half + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            out[128 + 32 * half + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (o, s) in out[192..208].iter_mut().zip(sc) {
        *o = s as u8;
    }
    out[208..210].copy_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Nearest signed 6-bit levels for the given scales; returns the weighted error.
fn assign_q6_k(x: &[f32], w: &[f32], d: f32, sc: &[i8; 16], q: &mut [i8; QK_K]) -> f32 {
    let mut y = [0f32; QK_K];
    for (j, &scj) in sc.iter().enumerate() {
        let r = 16 * j..16 * j + 16;
        let s = d * scj as f32;
        fit::assign_symmetric(&x[r.clone()], s, 32, &mut q[r.clone()]);
        for i in r {
            y[i] = s * q[i] as f32;
        }
    }
    fit::error(x, w, &y)
}
