//! Quantized dot products and products against the dequantize-then-f64 reference, the AVX2
//! kernels against the scalar ones, and a quantized model session against the f32 session.

#![allow(clippy::needless_range_loop)]

use engine::quant::dot::{dot_group, dot_rows, Level};
use engine::quant::matmul::{qmatmul_bt_with, qmatvec_many_with};
use engine::quant::{
    ActKind, ActPrecision, QMatVec, QMatrix, QType, QuantModel, QuantizedActs, QK, QK_K,
};

mod common;
use common::quant::{random_matrix, random_vec};

fn prepared(x: &[f32], rows: usize, cols: usize, t: QType) -> QuantizedActs {
    let mut a = QuantizedActs::default();
    a.prepare(x, rows, cols, &[t.act_kind()]);
    a
}

/// An 8-bit 32-block's scale is `amax / 127` rounded to f16 (llama.cpp's precision): each
/// value then lies within half a step plus `127 · 2⁻¹¹` steps of x, i.e. within half of
/// this many steps.
const F16_SCALE_SLACK: f32 = 1.0 + 127.0 / 1024.0;

/// The activation row as the kernels see it (quantized and dequantized back) and the
/// per-value step of its block (0 for f32 activations).
fn seen_activation(acts: &QuantizedActs, x: &[f32], t: QType, r: usize) -> (Vec<f32>, Vec<f32>) {
    let cols = acts.cols;
    match t.act_kind() {
        ActKind::F32 => (x[r * cols..(r + 1) * cols].to_vec(), vec![0.0; cols]),
        ActKind::Q8 => {
            let (mut v, mut d) = (Vec::new(), Vec::new());
            for b in acts.q8_row(r) {
                v.extend(b.qs.iter().map(|&q| q as f32 * b.d));
                d.extend([b.d * F16_SCALE_SLACK; QK]);
            }
            (v, d)
        }
        ActKind::Q8K => {
            let (mut v, mut d) = (Vec::new(), Vec::new());
            for b in acts.q8k_row(r) {
                v.extend(b.qs.iter().map(|&q| q as f32 * b.d));
                // Q8_K's scale carries the sign of the block's largest value.
                d.extend([b.d.abs(); QK_K]);
            }
            (v, d)
        }
    }
}

const COLS: [usize; 3] = [256, 576, 1536];

/// The slack of Q4_1's and Q5_1's minimum term with 8-bit activations: its sum term is stored
/// in f16 from the unrounded scale, as llama.cpp's Q8_1 does, so each block's `m · s` may move
/// by 2⁻¹¹ for that rounding and 2⁻¹¹ for the scale's: 2⁻¹⁰ of itself. `w_row` is the plain
/// (not interleaved) row.
fn min_term_slack(t: QType, w_row: &[u8], acts: &QuantizedActs, r: usize) -> f64 {
    if !matches!(t, QType::Q4_1 | QType::Q5_1) || acts.has_q16() {
        return 0.0;
    }
    w_row
        .chunks_exact(t.block_bytes())
        .zip(acts.q8_row(r))
        .map(|(b, a)| {
            let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32() as f64;
            (m * a.s as f64).abs() / 1024.0
        })
        .sum()
}

#[test]
fn dot_products_match_the_dequantized_reference() {
    let levels: Vec<Level> = [Level::Scalar, Level::detect()].into_iter().collect();
    for t in QType::ALL {
        for &cols in &COLS {
            if !cols.is_multiple_of(t.block_len()) {
                continue;
            }
            let w = random_matrix(t, 3, cols, 7 + cols as u64);
            let x = random_vec(2 * cols, 11);
            let acts = prepared(&x, 2, cols, t);
            for r in 0..2 {
                let (xq, step) = seen_activation(&acts, &x, t, r);
                let xr = &x[r * cols..(r + 1) * cols];
                for j in 0..3 {
                    let wf = w.to_f32()[j * cols..(j + 1) * cols].to_vec();
                    // Exact products of the dequantized weight with the activation it meets.
                    let exact: f64 = wf.iter().zip(&xq).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = wf
                        .iter()
                        .zip(&xq)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    // Against the f32 activation: the quantization moved each value by at
                    // most half a step, |err| <= sum_i |w_i| * d_block(i) / 2.
                    let full: f64 = wf.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let qbound: f64 = wf
                        .iter()
                        .zip(&step)
                        .map(|(&a, &d)| a.abs() as f64 * d as f64 / 2.0)
                        .sum();
                    let slack = min_term_slack(t, w.row(j), &acts, r);
                    for &level in &levels {
                        let got = dot_rows(level, t, w.row(j), &x, &acts, [r])[0] as f64;
                        // f32 rounding of the block scales and sums: relative 1e-5 of the
                        // sum of magnitudes.
                        assert!(
                            (got - exact).abs() <= 1e-5 * mag + 1e-6 + slack,
                            "{} {level:?} cols {cols}: {got} vs exact {exact}",
                            t.name()
                        );
                        assert!(
                            (got - full).abs() <= qbound + 1e-5 * mag + 1e-6 + slack,
                            "{} {level:?}: {got} vs f32 {full} (bound {qbound})",
                            t.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn avx2_rows_equal_scalar_rows() {
    if Level::detect() == Level::Scalar {
        eprintln!("skipped: no AVX2 on this CPU");
        return;
    }
    for t in QType::ALL {
        let cols = 512;
        let w = random_matrix(t, 2, cols, 3);
        let x = random_vec(4 * cols, 5);
        let acts = prepared(&x, 4, cols, t);
        for j in 0..2 {
            let four = dot_rows(Level::Avx2, t, w.row(j), &x, &acts, [0, 1, 2, 3]);
            for r in 0..4 {
                let one = dot_rows(Level::Avx2, t, w.row(j), &x, &acts, [r])[0];
                let s = dot_rows(Level::Scalar, t, w.row(j), &x, &acts, [r])[0];
                // The same blocks in the same order: tiling rows changes nothing.
                assert_eq!(
                    four[r].to_bits(),
                    one.to_bits(),
                    "{} tile row {r}",
                    t.name()
                );
                // Integer block sums are exact in both; only the f32 accumulation order of
                // the block terms differs (8 lanes vs one), bound 1e-5 relative.
                let (xq, _) = seen_activation(&acts, &x, t, r);
                let wf = &w.to_f32()[j * cols..(j + 1) * cols];
                let mag: f32 = wf.iter().zip(&xq).map(|(a, b)| (a * b).abs()).sum();
                assert!(
                    (one - s).abs() <= 1e-5 * mag + 1e-6,
                    "{}: {one} vs {s}",
                    t.name()
                );
            }
        }
    }
}

#[test]
fn matvec_and_prefill_products_equal_row_dots() {
    for t in QType::ALL {
        for level in [Level::Scalar, Level::detect()] {
            let (n, k, m) = (37, 512, 6);
            let w = random_matrix(t, n, k, 9);
            let x = random_vec(m * k, 13);
            let acts = prepared(&x, m, k, t);
            let mut c = vec![0f32; m * n];
            qmatmul_bt_with(level, &x, &acts, &w, &mut c, m);
            for r in 0..m {
                for j in 0..n {
                    let want = dot_rows(level, t, w.row(j), &x, &acts, [r])[0];
                    assert_eq!(
                        c[r * n + j].to_bits(),
                        want.to_bits(),
                        "{} [{r}, {j}]",
                        t.name()
                    );
                }
            }
            // Two matrices sharing one input vector, one region.
            let w2 = random_matrix(t, 5, k, 10);
            let (mut o1, mut o2) = (vec![0f32; n], vec![0f32; 5]);
            let mut acts1 = QuantizedActs::default();
            qmatvec_many_with(
                level,
                &x[..k],
                &mut acts1,
                vec![
                    QMatVec {
                        w: &w,
                        out: &mut o1,
                    },
                    QMatVec {
                        w: &w2,
                        out: &mut o2,
                    },
                ],
            );
            for j in 0..n {
                assert_eq!(
                    o1[j].to_bits(),
                    c[j].to_bits(),
                    "{} matvec row {j}",
                    t.name()
                );
            }
            let a1 = prepared(&x[..k], 1, k, t);
            for j in 0..5 {
                let want = dot_rows(level, t, w2.row(j), &x[..k], &a1, [0])[0];
                assert_eq!(o2[j].to_bits(), want.to_bits());
            }
        }
    }
}

/// The types with an interleaved layout (groups of 8 rows).
const INTERLEAVED: [QType; 5] = [
    QType::Q8_0,
    QType::Q4_0,
    QType::Q4_1,
    QType::Q5_0,
    QType::Q5_1,
];

#[test]
fn interleaved_groups_match_the_dequantized_reference() {
    let levels = [Level::Scalar, Level::detect()];
    for t in INTERLEAVED {
        for &cols in &COLS {
            // Two whole groups and a plain tail of 3 rows.
            let plain = random_matrix(t, 19, cols, 21 + cols as u64);
            let w = plain.interleaved();
            assert!(w.is_interleaved() && w.grouped_rows() == 16);
            assert_eq!(w.to_f32(), plain.to_f32(), "{} dequantized", t.name());
            let wf = plain.to_f32();
            let x = random_vec(5 * cols, 23);
            let acts = prepared(&x, 5, cols, t);
            for level in levels {
                for g in 0..2 {
                    let tile = dot_group(level, t, w.group(g), &acts, [0, 1, 2, 3]);
                    for r in 0..5 {
                        let one = dot_group(level, t, w.group(g), &acts, [r])[0];
                        let (xq, step) = seen_activation(&acts, &x, t, r);
                        let xr = &x[r * cols..(r + 1) * cols];
                        for l in 0..8 {
                            let row = &wf[(8 * g + l) * cols..(8 * g + l + 1) * cols];
                            let exact: f64 = row
                                .iter()
                                .zip(&xq)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum();
                            let mag: f64 = row
                                .iter()
                                .zip(&xq)
                                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                                .sum();
                            let full: f64 =
                                row.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let qbound: f64 = row
                                .iter()
                                .zip(&step)
                                .map(|(&a, &d)| a.abs() as f64 * d as f64 / 2.0)
                                .sum();
                            let got = one[l] as f64;
                            let slack = min_term_slack(t, plain.row(8 * g + l), &acts, r);
                            // Exact integer sums per block; f32 rounding of the scale
                            // products and of the sum over blocks: 1e-5 of the magnitudes.
                            assert!(
                                (got - exact).abs() <= 1e-5 * mag + 1e-6 + slack,
                                "{} {level:?} cols {cols} row {}: {got} vs {exact}",
                                t.name(),
                                8 * g + l
                            );
                            // Against the f32 activation: at most half a step per value.
                            assert!(
                                (got - full).abs() <= qbound + 1e-5 * mag + 1e-6 + slack,
                                "{} {level:?}: {got} vs f32 {full} (bound {qbound})",
                                t.name()
                            );
                            if r < 4 && level != Level::Scalar {
                                // A tile of rows computes each row exactly as alone.
                                assert_eq!(tile[r][l].to_bits(), one[l].to_bits());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// 16-bit activations: the groups against the exact product with the activation as the
/// kernel sees it (bound 1e-5 of the magnitudes) and against the f32 activation (half a
/// 16-bit step per value: `sum |w| amax / 65534`, 258x tighter than 8 bits).
#[test]
fn sixteen_bit_activations_match_the_dequantized_reference() {
    for t in INTERLEAVED {
        let cols = 576;
        let plain = random_matrix(t, 16, cols, 41);
        let w = plain.interleaved();
        let wf = plain.to_f32();
        let x = random_vec(5 * cols, 43);
        let mut acts = QuantizedActs::default();
        acts.precision = ActPrecision::I16;
        acts.prepare(&x, 5, cols, &[t.act_kind()]);
        assert!(acts.has_q16());
        for level in [Level::Scalar, Level::detect()] {
            for g in 0..2 {
                let tile = dot_group(level, t, w.group(g), &acts, [0, 1, 2, 3]);
                for r in 0..5 {
                    let one = dot_group(level, t, w.group(g), &acts, [r])[0];
                    let blocks = acts.q16_row(r);
                    let xq: Vec<f32> = (0..cols)
                        .map(|j| {
                            let b = &blocks[j / QK];
                            b.qs[engine::quant::act::swizzle(j % QK)] as f32 * b.d
                        })
                        .collect();
                    let xr = &x[r * cols..(r + 1) * cols];
                    for l in 0..8 {
                        let j = 8 * g + l;
                        let row = &wf[j * cols..(j + 1) * cols];
                        let exact: f64 = row
                            .iter()
                            .zip(&xq)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum();
                        let mag: f64 = row
                            .iter()
                            .zip(&xq)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let full: f64 =
                            row.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let qbound: f64 = row
                            .iter()
                            .enumerate()
                            .map(|(i, &a)| a.abs() as f64 * blocks[i / QK].d as f64 / 2.0)
                            .sum();
                        let got = one[l] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-5 * mag + 1e-6,
                            "{} {level:?} row {j}: {got} vs {exact}",
                            t.name()
                        );
                        assert!(
                            (got - full).abs() <= qbound + 1e-5 * mag + 1e-6,
                            "{} {level:?}: {got} vs f32 {full} (bound {qbound})",
                            t.name()
                        );
                        if r < 4 && level != Level::Scalar {
                            assert_eq!(tile[r][l].to_bits(), one[l].to_bits());
                        }
                        // The plain-row path (tails) computes the same product.
                        let p = dot_rows(level, t, plain.row(j), &x, &acts, [r])[0] as f64;
                        assert!((p - exact).abs() <= 1e-5 * mag + 1e-6);
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_products_equal_the_plain_products() {
    for t in INTERLEAVED {
        for level in [Level::Scalar, Level::detect()] {
            let (n, k, m) = (43, 576, 6);
            let plain = random_matrix(t, n, k, 31);
            let w = plain.interleaved();
            let x = random_vec(m * k, 33);
            let acts = prepared(&x, m, k, t);
            let (mut c, mut cp) = (vec![0f32; m * n], vec![0f32; m * n]);
            qmatmul_bt_with(level, &x, &acts, &w, &mut c, m);
            qmatmul_bt_with(level, &x, &acts, &plain, &mut cp, m);
            let scale = cp.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, (a, b)) in c.iter().zip(&cp).enumerate() {
                // Only the f32 order of the block terms differs.
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{} {level:?} [{}, {}]: {a} vs {b}",
                    t.name(),
                    i / n,
                    i % n
                );
            }
            // Decode of row 0 equals prefill's row 0 bit for bit (tile of 4 vs alone).
            let mut o = vec![0f32; n];
            let mut a1 = QuantizedActs::default();
            qmatvec_many_with(
                level,
                &x[..k],
                &mut a1,
                vec![QMatVec { w: &w, out: &mut o }],
            );
            for j in 0..n {
                assert_eq!(o[j].to_bits(), c[j].to_bits(), "{} row {j}", t.name());
            }
        }
    }
}

#[test]
fn bad_matrices_are_errors() {
    assert!(QMatrix::from_bytes("w", QType::Q4K, 1, 100, vec![0; 144]).is_err());
    assert!(QMatrix::from_bytes("w", QType::Q8_0, 2, 32, vec![0; 34]).is_err());
    assert!(QMatrix::from_bytes("w", QType::Q8_0, 1, 32, vec![0; 34]).is_ok());
}

fn tiny_config() -> engine::ModelConfig {
    engine::ModelConfig {
        dim: 256,
        hidden_dim: 512,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 96,
        max_seq_len: 64,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_embeddings: false,
        qkv_bias: true,
    }
}

/// A test-only Q8_0 encoder (amax / 127 per block, f16 scale).
fn encode_q8_0(name: &str, rows: usize, cols: usize, data: &[f32]) -> Option<QMatrix> {
    let mut bytes = Vec::new();
    for blk in data.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        bytes.extend(d.to_le_bytes());
        bytes.extend(
            blk.iter()
                .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    QMatrix::from_bytes(name, QType::Q8_0, rows, cols, bytes).ok()
}

fn logits_of(weights: engine::infer::Weights<'_>, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut s = engine::infer::InferenceSession::new(weights, 32).expect("session");
    let all = s.prefill_all_logits(ids).expect("prefill");
    let mut s2 = engine::infer::InferenceSession::new(weights, 32).expect("session");
    s2.prefill(&ids[..1]).expect("prefill one");
    let mut last = Vec::new();
    for &t in &ids[1..] {
        last = s2.decode(t).expect("decode").to_vec();
    }
    (all, last)
}

#[test]
fn quantized_session_matches_the_f32_session() {
    let cfg = tiny_config();
    let mut params = engine::init::init_params(&cfg, 3).expect("params");
    // Non-trivial norms and biases.
    for (i, v) in params.data.iter_mut().enumerate() {
        *v += 0.001 * ((i % 13) as f32 - 6.0);
    }
    let ids: Vec<u32> = vec![1, 5, 9, 33, 70, 2, 95, 40];
    let v = cfg.vocab_size;
    // F32 matrices: the same numbers, through the quantized session's code.
    let exact = QuantModel::from_params(&params, |_, _, _, _| None).expect("f32 model");
    let (want_all, want_last) = logits_of((&params).into(), &ids);
    let (got_all, got_last) = logits_of((&exact).into(), &ids);
    for (a, b) in want_all.iter().zip(&got_all) {
        assert!((a - b).abs() < 1e-4, "F32 QuantModel prefill {a} vs {b}");
    }
    for (a, b) in want_last.iter().zip(&got_last) {
        assert!((a - b).abs() < 1e-4, "F32 QuantModel decode {a} vs {b}");
    }
    // Q8_0 matrices against the f32 session on the same dequantized weights: the only
    // difference left is the 8-bit activations (relative error ~ 1/254 per product).
    let q8 = QuantModel::from_params(&params, encode_q8_0).expect("q8 model");
    let mut deq = params.clone();
    for name in deq
        .layout
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect::<Vec<_>>()
    {
        let spec = deq.layout.find(&name).expect("spec").clone();
        if spec.shape.len() == 2 {
            let m = encode_q8_0(
                &name,
                spec.shape[0],
                spec.shape[1],
                &params.data[spec.range()],
            )
            .expect("encode");
            deq.data[spec.range()].copy_from_slice(&m.to_f32());
        }
    }
    let (want_all, want_last) = logits_of((&deq).into(), &ids);
    let (got_all, got_last) = logits_of((&q8).into(), &ids);
    // The interleaved layout gives the same logits up to the f32 order of block terms.
    let mut q8i = q8.clone();
    q8i.interleave();
    assert!(q8i.layers[0].wq.is_interleaved());
    let (il_all, il_last) = logits_of((&q8i).into(), &ids);
    for (a, b) in got_all
        .iter()
        .zip(&il_all)
        .chain(got_last.iter().zip(&il_last))
    {
        assert!((a - b).abs() < 1e-3, "interleaved {b} vs plain {a}");
    }
    let scale = want_all.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = want_all
        .iter()
        .zip(&got_all)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 0.02 * scale + 1e-3,
        "Q8_0 prefill off by {worst} (scale {scale})"
    );
    for (a, b) in want_last.iter().zip(&got_last) {
        assert!(
            (a - b).abs() <= 0.02 * scale + 1e-3,
            "Q8_0 decode {a} vs {b}"
        );
    }
    // Prefill's last row equals decode's (same kernels on the same activations).
    assert_eq!(got_all.len(), ids.len() * v);
    for (a, b) in got_all[(ids.len() - 1) * v..].iter().zip(&got_last) {
        assert!((a - b).abs() < 1e-4);
    }
}

/// One call of `dot_group` at `R` rows, flattened to one output per (row, lane).
fn group_bits<const R: usize>(
    level: Level,
    t: QType,
    g: &[u8],
    acts: &QuantizedActs,
    rows: [usize; R],
) -> Vec<u32> {
    dot_group(level, t, g, acts, rows)
        .iter()
        .flat_map(|o| o.map(f32::to_bits))
        .collect()
}

/// Every tile size a caller uses (decode R = 1, prefill tiles up to 4), rows out of order.
fn group_tiles(level: Level, t: QType, g: &[u8], acts: &QuantizedActs) -> Vec<Vec<u32>> {
    vec![
        group_bits(level, t, g, acts, [4]),
        group_bits(level, t, g, acts, [3, 0]),
        group_bits(level, t, g, acts, [1, 4, 2]),
        group_bits(level, t, g, acts, [0, 1, 2, 3]),
    ]
}

/// The AVX-512 VNNI group kernels give the AVX2 kernels' results bit for bit (8- and 16-bit
/// activations, every tile size, odd block counts), and both stay within the f32 rounding
/// bound of the scalar reference.
#[test]
fn avx512_groups_equal_avx2_groups_bit_for_bit() {
    if Level::detect() != Level::Avx512Vnni {
        eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    for t in INTERLEAVED {
        for cols in [32, 64, 96, 160, 576, 1536] {
            let plain = random_matrix(t, 16, cols, 51 + cols as u64);
            let w = plain.interleaved();
            let x = random_vec(5 * cols, 53 + cols as u64);
            for precision in [ActPrecision::I8, ActPrecision::I16] {
                let mut acts = QuantizedActs::default();
                acts.precision = precision;
                acts.prepare(&x, 5, cols, &[t.act_kind()]);
                for g in 0..2 {
                    let fast = group_tiles(Level::Avx512Vnni, t, w.group(g), &acts);
                    let avx2 = group_tiles(Level::Avx2, t, w.group(g), &acts);
                    assert_eq!(fast, avx2, "{} cols {cols} {precision:?}", t.name());
                    for r in 0..5 {
                        let f = dot_group(Level::Avx512Vnni, t, w.group(g), &acts, [r])[0];
                        let s = dot_group(Level::Scalar, t, w.group(g), &acts, [r])[0];
                        let scale = s.iter().fold(1f32, |a, v| a.max(v.abs()));
                        for l in 0..8 {
                            // Only the f32 order of the block terms differs from scalar.
                            assert!(
                                (f[l] - s[l]).abs() <= 1e-5 * scale * (cols / 32) as f32,
                                "{} cols {cols} {precision:?} row {r} lane {l}: {} vs {}",
                                t.name(),
                                f[l],
                                s[l]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Decode and prefill at the AVX-512 level equal the AVX2 level bit for bit.
#[test]
fn avx512_matvec_and_prefill_equal_avx2() {
    if Level::detect() != Level::Avx512Vnni {
        eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    for t in INTERLEAVED {
        for precision in [ActPrecision::I8, ActPrecision::I16] {
            let (n, k, m) = (43, 576, 7);
            let w = random_matrix(t, n, k, 61).interleaved();
            let x = random_vec(m * k, 63);
            let mut acts = QuantizedActs::default();
            acts.precision = precision;
            acts.prepare(&x, m, k, &[t.act_kind()]);
            let (mut c5, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
            qmatmul_bt_with(Level::Avx512Vnni, &x, &acts, &w, &mut c5, m);
            qmatmul_bt_with(Level::Avx2, &x, &acts, &w, &mut c2, m);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&c5), bits(&c2), "{} {precision:?} prefill", t.name());
            let (mut o5, mut o2) = (vec![0f32; n], vec![0f32; n]);
            for (level, out) in [(Level::Avx512Vnni, &mut o5), (Level::Avx2, &mut o2)] {
                let mut a1 = QuantizedActs::default();
                a1.precision = precision;
                qmatvec_many_with(level, &x[..k], &mut a1, vec![QMatVec { w: &w, out }]);
            }
            assert_eq!(bits(&o5), bits(&o2), "{} {precision:?} decode", t.name());
            assert_eq!(bits(&o5), bits(&c5[..n]), "{} {precision:?}", t.name());
        }
    }
}

/// Timing of the group kernels per level (best of many passes, robust to a shared CPU):
/// `cargo test -p engine --release --test quant_kernels bench_group -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_group_kernels() {
    let levels = [Level::Avx2, Level::Avx512Vnni];
    if Level::detect() != Level::Avx512Vnni {
        eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    for t in INTERLEAVED {
        for precision in [ActPrecision::I16, ActPrecision::I8] {
            let (n, k) = (1536, 576);
            let w = random_matrix(t, n, k, 71).interleaved();
            let x = random_vec(4 * k, 73);
            let mut acts = QuantizedActs::default();
            acts.precision = precision;
            acts.prepare(&x, 4, k, &[t.act_kind()]);
            let mut best = [[f64::MAX; 2]; 2];
            let mut sink = 0f32;
            for _ in 0..200 {
                for (i, &level) in levels.iter().enumerate() {
                    let t0 = std::time::Instant::now();
                    for g in 0..n / 8 {
                        sink += dot_group(level, t, w.group(g), &acts, [0])[0][0];
                    }
                    best[i][0] = best[i][0].min(t0.elapsed().as_secs_f64());
                    let t0 = std::time::Instant::now();
                    for g in 0..n / 8 {
                        sink += dot_group(level, t, w.group(g), &acts, [0, 1, 2, 3])[3][0];
                    }
                    best[i][1] = best[i][1].min(t0.elapsed().as_secs_f64());
                }
            }
            eprintln!(
                "{} {precision:?} {n}x{k}: R=1 avx2 {:.1} us, avx512 {:.1} us ({:.2}x); R=4 avx2 {:.1} us, avx512 {:.1} us ({:.2}x) [{sink:.0}]",
                t.name(),
                best[0][0] * 1e6,
                best[1][0] * 1e6,
                best[0][0] / best[1][0],
                best[0][1] * 1e6,
                best[1][1] * 1e6,
                best[0][1] / best[1][1],
            );
        }
    }
}

/// A Q5_0 (`one = false`) or Q5_1 block holding the unsigned 5-bit values `q`, written from
/// ggml's layout (f16 d, [f16 m], u32 qh with bit j = value j's fifth bit, 16 bytes of
/// nibbles: values 0..16 low, 16..32 high), independently of the engine's decoder.
fn q5_block(one: bool, d: f32, m: f32, q: &[u8; 32]) -> Vec<u8> {
    let mut b = half::f16::from_f32(d).to_le_bytes().to_vec();
    if one {
        b.extend(half::f16::from_f32(m).to_le_bytes());
    }
    let qh = (0..32).fold(0u32, |h, j| h | ((q[j] as u32 >> 4) & 1) << j);
    b.extend(qh.to_le_bytes());
    b.extend((0..16).map(|j| (q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4));
    b
}

/// Q5 blocks decode to ggml's values (`d (q - 16)`, `d q + m`), plain and interleaved.
#[test]
fn q5_blocks_follow_the_ggml_layout() {
    for (t, one) in [(QType::Q5_0, false), (QType::Q5_1, true)] {
        let (rows, cols) = (9, 64);
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for r in 0..rows {
            for blk in 0..cols / 32 {
                let q: [u8; 32] = std::array::from_fn(|j| ((j * 7 + 5 * r + 11 * blk) % 32) as u8);
                let (d, m) = (0.5 + r as f32 * 0.25, -1.25 - blk as f32);
                bytes.extend(q5_block(one, d, m, &q));
                want.extend(q.iter().map(|&v| {
                    if one {
                        v as f32 * d + m
                    } else {
                        (v as f32 - 16.0) * d
                    }
                }));
            }
        }
        let plain = QMatrix::from_bytes("w", t, rows, cols, bytes).expect("matrix");
        assert_eq!(plain.to_f32(), want, "{} plain", t.name());
        let w = plain.interleaved();
        assert!(w.is_interleaved() && w.grouped_rows() == 8);
        assert_eq!(w.to_f32(), want, "{} interleaved", t.name());
        for r in 0..rows {
            assert_eq!(w.row_blocks(r), plain.row_blocks(r), "{} row {r}", t.name());
        }
    }
}

/// The Q5 group kernels at every level this CPU has, 8- and 16-bit activations, tiles of
/// R = 1..4 rows, 1, 3, 5 and 19 blocks per row, against the product of the dequantized
/// weights (f64) with the activation as the kernel sees it: exact integer block sums, so
/// only f32 rounding of the scales and the sum over blocks, bound 1e-5 of the sum of
/// magnitudes; and against the f32 activation: plus half an activation step per value,
/// `sum |w| d_block / 2` (d = amax / 127 at 8 bits, amax / 32767 at 16 bits). The plain tail
/// rows (past the last group) meet the same bounds.
#[test]
fn q5_kernels_match_the_dequantized_reference() {
    let mut levels = vec![Level::Scalar];
    if Level::detect().has_avx2() {
        levels.push(Level::Avx2);
    } else {
        eprintln!("note: no AVX2 on this CPU, Q5 vector kernels not tested");
    }
    if Level::detect() == Level::Avx512Vnni {
        levels.push(Level::Avx512Vnni);
    } else {
        eprintln!("note: no AVX-512 VNNI on this CPU, its Q5 kernels not tested");
    }
    for t in [QType::Q5_0, QType::Q5_1] {
        for cols in [32, 96, 160, 608] {
            let plain = random_matrix(t, 19, cols, 81 + cols as u64);
            let w = plain.interleaved();
            let wf = plain.to_f32();
            let x = random_vec(5 * cols, 83 + cols as u64);
            for precision in [ActPrecision::I8, ActPrecision::I16] {
                let mut acts = QuantizedActs::default();
                acts.precision = precision;
                acts.prepare(&x, 5, cols, &[t.act_kind()]);
                // (value as the kernel sees it, its block's step) of activation row r.
                let seen = |r: usize| -> Vec<(f32, f32)> {
                    (0..cols)
                        .map(|j| match precision {
                            ActPrecision::I8 => {
                                let b = &acts.q8_row(r)[j / QK];
                                (b.qs[j % QK] as f32 * b.d, b.d * F16_SCALE_SLACK)
                            }
                            ActPrecision::I16 => {
                                let b = &acts.q16_row(r)[j / QK];
                                let q = b.qs[engine::quant::act::swizzle(j % QK)];
                                (q as f32 * b.d, b.d)
                            }
                        })
                        .collect()
                };
                let check = |level: Level, row: usize, r: usize, got: f32| {
                    let wr = &wf[row * cols..(row + 1) * cols];
                    let xs = seen(r);
                    let xr = &x[r * cols..(r + 1) * cols];
                    let (mut exact, mut mag, mut full, mut qbound) = (0f64, 0f64, 0f64, 0f64);
                    for j in 0..cols {
                        let (a, (b, d)) = (wr[j] as f64, (xs[j].0 as f64, xs[j].1 as f64));
                        exact += a * b;
                        mag += (a * b).abs();
                        full += a * xr[j] as f64;
                        qbound += a.abs() * d / 2.0;
                    }
                    let got = got as f64;
                    let slack = min_term_slack(t, plain.row(row), &acts, r);
                    let what = format!(
                        "{} {level:?} {precision:?} cols {cols} row {row} x{r}",
                        t.name()
                    );
                    assert!(
                        (got - exact).abs() <= 1e-5 * mag + 1e-6 + slack,
                        "{what}: {got} vs {exact}"
                    );
                    assert!(
                        (got - full).abs() <= qbound + 1e-5 * mag + 1e-6 + slack,
                        "{what}: {got} vs f32 {full} (bound {qbound})"
                    );
                };
                for &level in &levels {
                    for g in 0..2 {
                        let tiles: Vec<(Vec<usize>, Vec<[f32; 8]>)> = vec![
                            (
                                vec![4],
                                dot_group(level, t, w.group(g), &acts, [4]).to_vec(),
                            ),
                            (
                                vec![3, 0],
                                dot_group(level, t, w.group(g), &acts, [3, 0]).to_vec(),
                            ),
                            (
                                vec![1, 4, 2],
                                dot_group(level, t, w.group(g), &acts, [1, 4, 2]).to_vec(),
                            ),
                            (
                                vec![0, 1, 2, 3],
                                dot_group(level, t, w.group(g), &acts, [0, 1, 2, 3]).to_vec(),
                            ),
                        ];
                        for (rows, outs) in &tiles {
                            for (&r, out) in rows.iter().zip(outs) {
                                let alone = dot_group(level, t, w.group(g), &acts, [r])[0];
                                for l in 0..8 {
                                    check(level, 8 * g + l, r, out[l]);
                                    // A row's result does not depend on its tile.
                                    assert_eq!(out[l].to_bits(), alone[l].to_bits());
                                }
                            }
                        }
                    }
                    for row in 16..19 {
                        for r in 0..5 {
                            check(
                                level,
                                row,
                                r,
                                dot_rows(level, t, w.row(row), &x, &acts, [r])[0],
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The K-quant prefill (AVX-512 VNNI: panels of 16 rows; elsewhere the row kernels) equals
/// the scalar reference bit for bit, for panel tails (rows not a multiple of 16), every tile
/// tail of activation rows, and every depth up to 6 super-blocks.
#[test]
fn kquant_prefill_equals_the_scalar_reference_bit_for_bit() {
    for t in [QType::Q4K, QType::Q5K, QType::Q6K] {
        for (n, k, m) in [(16, 256, 4), (17, 768, 9), (40, 1536, 3), (5, 512, 1)] {
            let w = random_matrix(t, n, k, 71 + n as u64);
            let x = random_vec(m * k, 73 + m as u64);
            let acts = prepared(&x, m, k, t);
            let mut c = vec![f32::NAN; m * n];
            qmatmul_bt_with(Level::detect(), &x, &acts, &w, &mut c, m);
            for r in 0..m {
                for j in 0..n {
                    let want = dot_rows(Level::Scalar, t, w.row(j), &x, &acts, [r])[0];
                    assert_eq!(
                        c[r * n + j].to_bits(),
                        want.to_bits(),
                        "{} {n}x{k}, m {m} [{r}, {j}]: {} vs {want}",
                        t.name(),
                        c[r * n + j]
                    );
                }
            }
        }
    }
}

/// The 16-bit prefill of whole interleaved groups (AVX-512 VNNI: panels of 16 rows) equals
/// the AVX2 group kernels and decode bit for bit: one group, two, two and a half panels;
/// every tile tail of activation rows.
#[test]
fn sixteen_bit_panels_equal_the_group_kernels_bit_for_bit() {
    if Level::detect() != Level::Avx512Vnni {
        eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    for t in INTERLEAVED {
        for (n, k, m) in [(8, 32, 1), (16, 576, 5), (40, 96, 9), (24, 1536, 4)] {
            let w = random_matrix(t, n, k, 81 + n as u64).interleaved();
            let x = random_vec(m * k, 83 + m as u64);
            let mut acts = QuantizedActs::default();
            acts.precision = ActPrecision::I16;
            acts.prepare(&x, m, k, &[t.act_kind()]);
            let (mut c5, mut c2) = (vec![f32::NAN; m * n], vec![0f32; m * n]);
            qmatmul_bt_with(Level::Avx512Vnni, &x, &acts, &w, &mut c5, m);
            qmatmul_bt_with(Level::Avx2, &x, &acts, &w, &mut c2, m);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&c5), bits(&c2), "{} {n}x{k} m {m}", t.name());
            let mut o = vec![0f32; n];
            let mut a1 = QuantizedActs::default();
            a1.precision = ActPrecision::I16;
            qmatvec_many_with(
                Level::Avx512Vnni,
                &x[..k],
                &mut a1,
                vec![QMatVec { w: &w, out: &mut o }],
            );
            assert_eq!(bits(&o), bits(&c5[..n]), "{} {n}x{k} decode", t.name());
        }
    }
}
