//! Weighted least-squares fits of the scale (and offset) that map a group of values onto an
//! integer grid: the search behind the K-quant encoders. Each fit tries a fan of starting
//! scales around the plain min/max one, assigns the nearest levels, solves the normal
//! equations for the best scale (and offset) given those levels, and keeps the candidate with
//! the smallest weighted squared error; then it alternates assign/solve until nothing improves.

/// Per-value weights: the group's RMS plus the magnitude, so large values (which dominate the
/// dot products) count more without the small ones being ignored.
pub fn weights(x: &[f32], w: &mut [f32]) {
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt();
    for (wi, xi) in w.iter_mut().zip(x) {
        *wi = rms + xi.abs();
    }
}

/// Candidate starting points on each side of the plain scale (steps of 1/10 level).
const FAN: i32 = 10;
/// The largest group a fit is asked for (a Q4_K/Q5_K sub-block).
const MAX_GROUP: usize = 32;
/// Alternating assign/solve rounds after the fan.
const REFINE_ROUNDS: usize = 4;

/// `x ≈ scale·q + offset` with `q` in `0..=nmax` and `offset <= 0` (the K-quant minimum is
/// stored as a non-negative number subtracted). Fills `q`, returns `(scale, offset)`.
pub fn fit_affine(x: &[f32], w: &[f32], nmax: u8, q: &mut [u8]) -> (f32, f32) {
    debug_assert!(
        x.len() <= MAX_GROUP,
        "groups are at most {MAX_GROUP} values"
    );
    let lo = x.iter().copied().fold(0f32, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = hi - lo;
    let spread = range > f32::EPSILON * hi.abs().max(lo.abs()).max(f32::MIN_POSITIVE);
    if !spread {
        // All values equal (or no finite spread): the offset alone represents them.
        q.iter_mut().for_each(|v| *v = 0);
        return (0.0, lo);
    }
    let n = nmax as f32;
    let mut best = (range / n, lo);
    assign_affine(x, best.0, best.1, nmax, q);
    let mut best_err = affine_error(x, w, q, best.0, best.1);
    let mut cand = [0u8; MAX_GROUP];
    let cand = &mut cand[..x.len()];
    for k in -FAN..=FAN {
        let iscale = (n + k as f32 / FAN as f32) / range;
        for (c, xi) in cand.iter_mut().zip(x) {
            *c = ((xi - lo) * iscale).round().clamp(0.0, n) as u8;
        }
        let (s, b, err) = solve_affine(x, w, cand);
        if err < best_err {
            best_err = err;
            best = (s, b);
            q.copy_from_slice(cand);
        }
    }
    for _ in 0..REFINE_ROUNDS {
        if best.0 <= 0.0 {
            break;
        }
        assign_affine(x, best.0, best.1, nmax, cand);
        let (s, b, err) = solve_affine(x, w, cand);
        if err >= best_err {
            break;
        }
        best_err = err;
        best = (s, b);
        q.copy_from_slice(cand);
    }
    best
}

/// Nearest levels for a given scale and offset.
pub fn assign_affine(x: &[f32], scale: f32, offset: f32, nmax: u8, q: &mut [u8]) {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (qi, xi) in q.iter_mut().zip(x) {
        *qi = ((xi - offset) * inv).round().clamp(0.0, nmax as f32) as u8;
    }
}

/// The weighted least-squares scale and offset (offset held at most 0) for fixed levels, and
/// the weighted squared error they leave, all from one pass of sums.
fn solve_affine(x: &[f32], w: &[f32], q: &[u8]) -> (f32, f32, f32) {
    let (mut sw, mut sq, mut sqq, mut sx, mut sqx, mut sxx) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let (xi, wi, qi) = (xi as f64, wi as f64, qi as f64);
        sw += wi;
        sq += wi * qi;
        sqq += wi * qi * qi;
        sx += wi * xi;
        sqx += wi * qi * xi;
        sxx += wi * xi * xi;
    }
    // Σw(s·q + b − x)² expanded in the sums.
    let err = |s: f64, b: f64| {
        s * s * sqq + 2.0 * s * b * sq + b * b * sw - 2.0 * s * sqx - 2.0 * b * sx + sxx
    };
    let det = sw * sqq - sq * sq;
    if det > 0.0 {
        let s = (sw * sqx - sq * sx) / det;
        let b = (sqq * sx - sq * sqx) / det;
        if b <= 0.0 && s >= 0.0 {
            return (s as f32, b as f32, err(s, b).max(0.0) as f32);
        }
    }
    // The offset would come out positive (or the levels are all equal): hold it at 0.
    let (s, b) = if sqq > 0.0 {
        ((sqx / sqq).max(0.0), 0.0)
    } else {
        (0.0, (sx / sw.max(f64::MIN_POSITIVE)).min(0.0))
    };
    (s as f32, b as f32, err(s, b).max(0.0) as f32)
}

fn affine_error(x: &[f32], w: &[f32], q: &[u8], s: f32, b: f32) -> f32 {
    x.iter()
        .zip(w)
        .zip(q)
        .map(|((&xi, &wi), &qi)| {
            let e = s * qi as f32 + b - xi;
            wi * e * e
        })
        .sum()
}

/// `x ≈ scale·q` with `q` in `-nmax..=nmax-1` (the signed grid of Q6_K, which has one more
/// level below zero: the value of largest magnitude goes there). Fills `q`, returns the scale.
pub fn fit_symmetric(x: &[f32], w: &[f32], nmax: i8, q: &mut [i8]) -> f32 {
    debug_assert!(
        x.len() <= MAX_GROUP,
        "groups are at most {MAX_GROUP} values"
    );
    let peak = x
        .iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    let nonzero = peak.abs() > f32::MIN_POSITIVE;
    if !nonzero {
        q.iter_mut().for_each(|v| *v = 0);
        return 0.0;
    }
    let n = nmax as f32;
    let mut best = (f32::NEG_INFINITY, 0f32);
    let mut cand = [0i8; MAX_GROUP];
    let cand = &mut cand[..x.len()];
    for k in -FAN..=FAN {
        // Negative: the peak maps to the bottom level -nmax (or near it).
        let iscale = -(n + k as f32 / FAN as f32) / peak;
        for (c, xi) in cand.iter_mut().zip(x) {
            *c = (xi * iscale).round().clamp(-n, n - 1.0) as i8;
        }
        if let Some((gain, s)) = symmetric_gain(x, w, cand) {
            if gain > best.0 {
                best = (gain, s);
                q.copy_from_slice(cand);
            }
        }
    }
    for _ in 0..REFINE_ROUNDS {
        if best.1 == 0.0 {
            break;
        }
        assign_symmetric(x, best.1, nmax, cand);
        match symmetric_gain(x, w, cand) {
            Some((gain, s)) if gain > best.0 => {
                best = (gain, s);
                q.copy_from_slice(cand);
            }
            _ => break,
        }
    }
    best.1
}

/// Nearest signed levels for a given scale.
pub fn assign_symmetric(x: &[f32], scale: f32, nmax: i8, q: &mut [i8]) {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let n = nmax as f32;
    for (qi, xi) in q.iter_mut().zip(x) {
        *qi = (xi * inv).round().clamp(-n, n - 1.0) as i8;
    }
}

/// For fixed levels the best scale is Σwxq/Σwq², and the weighted error falls by
/// (Σwxq)²/Σwq²: that reduction is the score to maximise.
fn symmetric_gain(x: &[f32], w: &[f32], q: &[i8]) -> Option<(f32, f32)> {
    let (mut sxq, mut sqq) = (0f64, 0f64);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        sxq += wi as f64 * xi as f64 * qi as f64;
        sqq += wi as f64 * qi as f64 * qi as f64;
    }
    (sqq > 0.0).then(|| ((sxq * sxq / sqq) as f32, (sxq / sqq) as f32))
}

/// The weighted least-squares `d` for `x ≈ d·a` with fixed integer products `a`.
pub fn solve_scale(x: &[f32], w: &[f32], a: &[f32]) -> Option<f32> {
    let (mut sxa, mut saa) = (0f64, 0f64);
    for ((&xi, &wi), &ai) in x.iter().zip(w).zip(a) {
        sxa += wi as f64 * xi as f64 * ai as f64;
        saa += wi as f64 * ai as f64 * ai as f64;
    }
    (saa > 0.0).then(|| (sxa / saa) as f32)
}

/// The weighted least-squares `(d, dmin)` for `x ≈ d·a − dmin·c` with fixed integers `a`, `c`.
pub fn solve_two_scales(x: &[f32], w: &[f32], a: &[f32], c: &[f32]) -> Option<(f32, f32)> {
    let (mut saa, mut sac, mut scc, mut sxa, mut sxc) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (((&xi, &wi), &ai), &ci) in x.iter().zip(w).zip(a).zip(c) {
        let (xi, wi, ai, ci) = (xi as f64, wi as f64, ai as f64, ci as f64);
        saa += wi * ai * ai;
        sac += wi * ai * ci;
        scc += wi * ci * ci;
        sxa += wi * xi * ai;
        sxc += wi * xi * ci;
    }
    // Normal equations of x ≈ d·a + e·c, then dmin = −e.
    let det = saa * scc - sac * sac;
    if det <= 1e-12 * (saa * scc).max(f64::MIN_POSITIVE) {
        return None;
    }
    let d = (sxa * scc - sxc * sac) / det;
    let e = (saa * sxc - sac * sxa) / det;
    Some((d as f32, (-e) as f32))
}

/// Weighted squared error of a reconstruction.
pub fn error(x: &[f32], w: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(w)
        .zip(y)
        .map(|((&a, &wi), &b)| wi * (a - b) * (a - b))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 0.7
            })
            .collect()
    }

    #[test]
    fn affine_fit_is_no_worse_than_plain_min_max() {
        for seed in 0..50 {
            let x = data(32, seed);
            let mut w = vec![0.0; 32];
            weights(&x, &mut w);
            let mut q = vec![0u8; 32];
            let (s, b) = fit_affine(&x, &w, 15, &mut q);
            assert!(b <= 0.0 && s > 0.0);
            let fit = affine_error(&x, &w, &q, s, b);
            let lo = x.iter().copied().fold(0f32, f32::min);
            let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut q0 = vec![0u8; 32];
            assign_affine(&x, (hi - lo) / 15.0, lo, 15, &mut q0);
            let plain = affine_error(&x, &w, &q0, (hi - lo) / 15.0, lo);
            assert!(fit <= plain * 1.0001, "seed {seed}: {fit} > {plain}");
        }
    }

    #[test]
    fn symmetric_fit_is_no_worse_than_peak_over_nmax() {
        for seed in 0..50 {
            let x = data(16, seed);
            let mut w = vec![0.0; 16];
            weights(&x, &mut w);
            let mut q = vec![0i8; 16];
            let s = fit_symmetric(&x, &w, 32, &mut q);
            let y: Vec<f32> = q.iter().map(|&v| v as f32 * s).collect();
            let peak = x
                .iter()
                .copied()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let mut q0 = vec![0i8; 16];
            assign_symmetric(&x, -peak / 32.0, 32, &mut q0);
            let y0: Vec<f32> = q0.iter().map(|&v| v as f32 * -peak / 32.0).collect();
            assert!(error(&x, &w, &y) <= error(&x, &w, &y0) * 1.0001);
        }
    }

    #[test]
    fn constant_and_zero_groups_are_exact() {
        let w = vec![1.0; 32];
        let mut q = vec![0u8; 32];
        assert_eq!(fit_affine(&[0.0; 32], &w, 15, &mut q), (0.0, 0.0));
        let (s, b) = fit_affine(&[-0.5; 32], &w, 15, &mut q);
        assert_eq!((s, b), (0.0, -0.5));
        let mut qs = vec![0i8; 32];
        assert_eq!(fit_symmetric(&[0.0; 32], &w, 32, &mut qs), 0.0);
    }

    #[test]
    fn two_scale_solve_recovers_exact_parameters() {
        let a: Vec<f32> = (0..64).map(|i| (i % 13) as f32).collect();
        let c: Vec<f32> = (0..64).map(|i| (i / 32 + 1) as f32).collect();
        let x: Vec<f32> = a.iter().zip(&c).map(|(a, c)| 0.3 * a - 0.7 * c).collect();
        let (d, dmin) = solve_two_scales(&x, &vec![1.0; 64], &a, &c).unwrap();
        assert!(
            (d - 0.3).abs() < 1e-5 && (dmin - 0.7).abs() < 1e-5,
            "{d} {dmin}"
        );
    }
}
