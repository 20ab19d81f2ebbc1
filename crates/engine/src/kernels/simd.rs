//! Elementwise and row loops compiled three times — AVX-512, AVX2+FMA and the baseline — and
//! picked at run time, so one binary uses the widest vectors the CPU has. The loops are
//! plain Rust written so that the compiler vectorises them; every variant performs the same
//! operations in the same order, so results do not depend on which one runs.

use std::sync::OnceLock;

/// 4: AVX-512F, 3: AVX2 + FMA, 0: baseline.
pub(crate) fn level() -> u8 {
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return 4;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return 3;
            }
        }
        0
    })
}

/// Defines `fn name(args) -> ret` whose body is compiled per instruction-set level.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::kernels::simd::level() {
                    // SAFETY: the features these variants were compiled for were detected.
                    4 => return unsafe { v4($($arg),*) },
                    3 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;

/// exp(x) without a libm call: 2^n * e^r with n = round(x / ln 2), |r| <= ln(2)/2, and a
/// degree-7 Taylor polynomial for e^r (relative error below 1e-7). Clamped to [-87, 88].
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let v = x.clamp(-87.0, 88.0);
    let t = v * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (v - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // t's low mantissa bits hold n (|n| <= 127 after the clamp): 2^n from integer ops only,
    // which vectorise (a float-to-int cast would not: it saturates).
    let bits = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

multiversion! {
    /// x = exp(x) for every element (the reference for `fast_exp` tests).
    #[cfg(test)]
    pub(crate) fn exp_in_place(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = fast_exp(*x);
        }
    }
}

multiversion! {
    /// Sum of a * b with 16 independent partial sums (a fixed order on every CPU).
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 16];
        let mut ca = a.chunks_exact(16);
        let mut cb = b.chunks_exact(16);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..16 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        hsum16(&acc) + tail
    }
}

#[inline(always)]
fn hsum16(acc: &[f32; 16]) -> f32 {
    let mut s8 = [0.0f32; 8];
    for i in 0..8 {
        s8[i] = acc[i] + acc[i + 8];
    }
    let s4 = [s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

multiversion! {
    /// y += a * x
    pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

multiversion! {
    /// Largest element (NEG_INFINITY for an empty row).
    pub(crate) fn max(xs: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let mut c = xs.chunks_exact(16);
        for x in &mut c {
            for i in 0..16 {
                acc[i] = if x[i] > acc[i] { x[i] } else { acc[i] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for v in acc.iter().chain(c.remainder()) {
            m = if *v > m { *v } else { m };
        }
        m
    }
}

multiversion! {
    /// row = exp(row - shift); returns the sum of the new row (16 partial sums).
    pub(crate) fn exp_sub_sum(row: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut c = row.chunks_exact_mut(16);
        for x in &mut c {
            for i in 0..16 {
                x[i] = fast_exp(x[i] - shift);
                acc[i] += x[i];
            }
        }
        let mut tail = 0.0;
        for x in c.into_remainder() {
            *x = fast_exp(*x - shift);
            tail += *x;
        }
        hsum16(&acc) + tail
    }
}

multiversion! {
    /// Sum of the squares of `x * scale` in f64, with 16 partial sums (a fixed order on every
    /// CPU): independent chains instead of one long dependent one, so the gradient norm runs
    /// at memory speed. Each `x * scale` is rounded to f32 first, exactly as if the slice had
    /// been scaled in place.
    pub(crate) fn sum_squares_f64(xs: &[f32], scale: f32) -> f64 {
        let mut lo = [0.0f64; 8];
        let mut hi = [0.0f64; 8];
        let mut c = xs.chunks_exact(16);
        for x in &mut c {
            let a: [f64; 8] = std::array::from_fn(|i| (x[i] * scale) as f64);
            let b: [f64; 8] = std::array::from_fn(|i| (x[i + 8] * scale) as f64);
            for i in 0..8 {
                lo[i] += a[i] * a[i];
                hi[i] += b[i] * b[i];
            }
        }
        let mut tail = 0.0f64;
        for x in c.remainder() {
            let y = (*x * scale) as f64;
            tail += y * y;
        }
        let mut total = tail;
        for i in 0..8 {
            total += lo[i] + hi[i];
        }
        total
    }
}

/// Constants of one AdamW update.
#[derive(Clone, Copy)]
pub(crate) struct AdamWConsts {
    /// The stored gradient is multiplied by `grad_mean`, then by `grad_clip` (two roundings,
    /// as when the gradient is first averaged and then clipped in place).
    pub grad_mean: f32,
    pub grad_clip: f32,
    pub decay_factor: f32,
    pub b1: f32,
    pub b2: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
}

multiversion! {
    /// One AdamW update of a chunk (PyTorch's formula, operation for operation), which also
    /// zeroes the gradient it consumed: the next accumulation starts from a cleared buffer
    /// without another pass over memory. Vectorised per instruction set because its square
    /// root and two divisions make it compute-bound with the baseline's 4-wide vectors.
    pub(crate) fn adamw_update(p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32], k: AdamWConsts) {
        for (((p, g), m), v) in p.iter_mut().zip(g.iter_mut()).zip(m.iter_mut()).zip(v.iter_mut()) {
            let grad = *g * k.grad_mean * k.grad_clip;
            *g = 0.0;
            *p *= k.decay_factor;
            *m = k.b1 * *m + (1.0 - k.b1) * grad;
            *v = k.b2 * *v + (1.0 - k.b2) * grad * grad;
            let denom = v.sqrt() / k.bc2_sqrt + k.eps;
            *p -= k.step_size * *m / denom;
        }
    }
}

multiversion! {
    /// x *= a
    pub(crate) fn scale(xs: &mut [f32], a: f32) {
        for x in xs.iter_mut() {
            *x *= a;
        }
    }
}

multiversion! {
    /// h = silu(g) * u
    pub(crate) fn swiglu_forward(h: &mut [f32], g: &[f32], u: &[f32]) {
        for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
            let s = 1.0 / (1.0 + fast_exp(-*g));
            *h = g * s * u;
        }
    }
}

multiversion! {
    /// g = silu(g) * u in place, the same operations as `swiglu_forward` (inference).
    pub(crate) fn swiglu_in_place(g: &mut [f32], u: &[f32]) {
        for (g, u) in g.iter_mut().zip(u) {
            let s = 1.0 / (1.0 + fast_exp(-*g));
            *g = *g * s * u;
        }
    }
}

multiversion! {
    /// dg, du from dh for h = silu(g) * u.
    pub(crate) fn swiglu_backward(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
        let n = dg.len().min(du.len()).min(dh.len()).min(g.len()).min(u.len());
        for i in 0..n {
            let s = 1.0 / (1.0 + fast_exp(-g[i]));
            du[i] = dh[i] * g[i] * s;
            dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }
}

/// Largest of row[..live]; row.len() must be a multiple of 16 (entries past `live` are
/// ignored).
#[inline(always)]
pub(crate) fn max_masked(row: &[f32], live: usize) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    for (c, x) in row.chunks_exact(16).enumerate() {
        for i in 0..16 {
            let v = if c * 16 + i < live {
                x[i]
            } else {
                f32::NEG_INFINITY
            };
            acc[i] = acc[i].max(v);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc {
        m = if v > m { v } else { m };
    }
    m
}

/// row[j] = exp(row[j] - shift) for j < live and 0 beyond; returns the sum (16 partial
/// sums). row.len() must be a multiple of 16.
#[inline(always)]
pub(crate) fn exp_sub_sum_masked(row: &mut [f32], live: usize, shift: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    for (c, x) in row.chunks_exact_mut(16).enumerate() {
        for i in 0..16 {
            let e = fast_exp(x[i] - shift);
            let e = if c * 16 + i < live { e } else { 0.0 };
            x[i] = e;
            acc[i] += e;
        }
    }
    hsum16(&acc)
}

multiversion! {
    /// `max_masked` for callers outside a multiversioned loop.
    pub(crate) fn max_padded(row: &[f32], live: usize) -> f32 {
        max_masked(row, live)
    }
}

multiversion! {
    /// `exp_sub_sum_masked` for callers outside a multiversioned loop.
    pub(crate) fn exp_sub_sum_padded(row: &mut [f32], live: usize, shift: f32) -> f32 {
        exp_sub_sum_masked(row, live, shift)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate() {
        let mut xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 * 0.01).collect();
        let want: Vec<f64> = xs.iter().map(|x| (*x as f64).exp()).collect();
        super::exp_in_place(&mut xs);
        for (a, b) in xs.iter().zip(&want) {
            assert!(((*a as f64 - b) / b).abs() < 3e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn row_helpers() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = super::max(&row);
        assert_eq!(m, row.iter().cloned().fold(f32::MIN, f32::max));
        let want: f64 = row.iter().map(|x| ((x - m) as f64).exp()).sum();
        let s = super::exp_sub_sum(&mut row, m);
        assert!((s as f64 - want).abs() < 1e-5);
        let mut padded: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
        padded[37..].fill(5.0); // past `live`: ignored and zeroed
        assert_eq!(super::max_masked(&padded, 37), m);
        let s2 = super::exp_sub_sum_masked(&mut padded, 37, m);
        assert!((s2 as f64 - want).abs() < 1e-5);
        assert!(padded[37..].iter().all(|x| *x == 0.0));
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(
            super::dot(&a, &a),
            (0..37).map(|i| (i * i) as f32).sum::<f32>()
        );
    }
}
