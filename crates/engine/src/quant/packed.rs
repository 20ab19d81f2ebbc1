//! The interleaved layout of the 32-block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) for the vector
//! units:
//! rows in groups of [`GROUP`], block column by block column, so one 32-byte load holds four
//! weight bytes of each of the 8 rows (one 32-bit lane per row) and a product with a broadcast
//! activation word already has its lanes in output-row order (no horizontal sums).
//!
//! Per group and block column (`8 * block_bytes` bytes, the same size as the 8 plain blocks,
//! so a tensor can be interleaved in place):
//! - the 8 f16 scales `d` (16 bytes), then for Q4_1 / Q5_1 the 8 f16 minima `m` (16 bytes);
//! - Q5 only: the 8 rows' 32 high bits (32 bytes, lane `l` = row `l`), regrouped by
//!   [`q5_spread`] so that the bits chunk `c` needs sit in bit `c` (low nibbles) and bit
//!   `4 + c` (high nibbles) of the byte they extend: one shift and one mask per chunk;
//! - the quant bytes in chunks of 32: chunk `c`, lane `l` = bytes `4c..4c+4` of row `l`'s
//!   block (Q4/Q5: low nibbles are values `4c..4c+4`, high nibbles `16+4c..16+4c+4`).
//!
//! Rows past the last whole group stay in the plain layout after the groups.

use super::QType;

/// Rows per interleaved group.
pub const GROUP: usize = 8;

/// Whether `t` has an interleaved layout.
pub fn interleavable(t: QType) -> bool {
    matches!(
        t,
        QType::Q8_0 | QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1
    )
}

/// (f16 scale fields per block, offset of the quant bytes, quant bytes per block). For Q5
/// the "quant bytes" start with the 4 bytes of high bits (chunk 0, regrouped).
fn geometry(t: QType) -> (usize, usize, usize) {
    match t {
        QType::Q8_0 => (1, 2, 32),
        QType::Q4_0 => (1, 2, 16),
        QType::Q5_0 => (1, 2, 20),
        QType::Q5_1 => (2, 4, 20),
        _ => (2, 4, 16),
    }
}

/// Where bit `i` (0..32) of a Q5 block's `qh` (value `i`'s fifth bit) goes in the
/// interleaved lane: value `4c + k` (a low nibble of chunk `c`, byte `k`) to bit `8k + c`,
/// value `16 + 4c + k` (a high nibble) to bit `8k + 4 + c`.
fn q5_bit(i: u32) -> u32 {
    let (high, c, k) = (i / 16, (i % 16) / 4, i % 4);
    8 * k + 4 * high + c
}

/// A Q5 block's `qh` in the interleaved order ([`q5_bit`]).
pub(crate) fn q5_spread(qh: u32) -> u32 {
    (0..32).fold(0, |o, i| o | ((qh >> i) & 1) << q5_bit(i))
}

/// The inverse of [`q5_spread`].
pub(crate) fn q5_gather(q: u32) -> u32 {
    (0..32).fold(0, |o, i| o | ((q >> q5_bit(i)) & 1) << i)
}

fn is_q5(t: QType) -> bool {
    matches!(t, QType::Q5_0 | QType::Q5_1)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One group-block: the 8 plain blocks `src[l]` (each `block_bytes`) into `dst`.
fn interleave_block(t: QType, src: [&[u8]; GROUP], dst: &mut [u8]) {
    let (scales, qs_off, qs_len) = geometry(t);
    for s in 0..scales {
        for (l, b) in src.iter().enumerate() {
            dst[16 * s + 2 * l..16 * s + 2 * l + 2].copy_from_slice(&b[2 * s..2 * s + 2]);
        }
    }
    let base = 16 * scales;
    for c in 0..qs_len / 4 {
        for (l, b) in src.iter().enumerate() {
            let at = base + 32 * c + 4 * l;
            if c == 0 && is_q5(t) {
                dst[at..at + 4].copy_from_slice(&q5_spread(u32_at(b, qs_off)).to_le_bytes());
            } else {
                dst[at..at + 4].copy_from_slice(&b[qs_off + 4 * c..qs_off + 4 * c + 4]);
            }
        }
    }
}

/// The plain block of lane `lane` out of one group-block `g` into `out` (`block_bytes`).
pub(crate) fn plain_block(t: QType, g: &[u8], lane: usize, out: &mut [u8]) {
    let (scales, qs_off, qs_len) = geometry(t);
    for s in 0..scales {
        out[2 * s..2 * s + 2].copy_from_slice(&g[16 * s + 2 * lane..16 * s + 2 * lane + 2]);
    }
    let base = 16 * scales;
    for c in 0..qs_len / 4 {
        let at = base + 32 * c + 4 * lane;
        if c == 0 && is_q5(t) {
            out[qs_off..qs_off + 4].copy_from_slice(&q5_gather(u32_at(g, at)).to_le_bytes());
        } else {
            out[qs_off + 4 * c..qs_off + 4 * c + 4].copy_from_slice(&g[at..at + 4]);
        }
    }
}

/// Interleaves the whole groups of a `[rows, cols]` matrix of `t` (`bytes` = its blocks, row
/// after row) in place; rows past the last whole group keep the plain layout. `t` must be
/// [`interleavable`] and `bytes` exactly the matrix (the caller checked both).
pub fn interleave_in_place(t: QType, rows: usize, cols: usize, bytes: &mut [u8]) {
    debug_assert!(interleavable(t));
    let bb = t.block_bytes();
    let nb = cols / t.block_len();
    let row_bytes = nb * bb;
    let mut tmp = vec![0u8; GROUP * row_bytes];
    for group in bytes.chunks_exact_mut(GROUP * row_bytes).take(rows / GROUP) {
        for b in 0..nb {
            let src: [&[u8]; GROUP] = std::array::from_fn(|l| {
                &group[l * row_bytes + b * bb..l * row_bytes + (b + 1) * bb]
            });
            interleave_block(t, src, &mut tmp[b * GROUP * bb..(b + 1) * GROUP * bb]);
        }
        group.copy_from_slice(&tmp);
    }
}

/// The plain block bytes of lane `lane` of an interleaved group (`g`: `nb` group-blocks).
pub(crate) fn plain_row(t: QType, g: &[u8], lane: usize, out: &mut [u8]) {
    let bb = t.block_bytes();
    for (gb, o) in g.chunks_exact(GROUP * bb).zip(out.chunks_exact_mut(bb)) {
        plain_block(t, gb, lane, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips() {
        for t in [
            QType::Q8_0,
            QType::Q4_0,
            QType::Q4_1,
            QType::Q5_0,
            QType::Q5_1,
        ] {
            let (rows, cols) = (19, 96);
            let plain: Vec<u8> = (0..rows * cols / 32 * t.block_bytes())
                .map(|i| (i * 7 + i / 13) as u8)
                .collect();
            let mut packed = plain.clone();
            interleave_in_place(t, rows, cols, &mut packed);
            assert_ne!(packed, plain);
            let rb = cols / 32 * t.block_bytes();
            let mut row = vec![0u8; rb];
            for r in 0..16 {
                let g = &packed[r / 8 * 8 * rb..(r / 8 + 1) * 8 * rb];
                plain_row(t, g, r % 8, &mut row);
                assert_eq!(row, plain[r * rb..(r + 1) * rb], "{} row {r}", t.name());
            }
            // The partial group stays plain.
            assert_eq!(packed[16 * rb..], plain[16 * rb..]);
        }
    }

    #[test]
    fn q5_high_bits_land_where_the_kernels_read_them() {
        for i in 0..32u32 {
            let q = q5_spread(1 << i);
            assert_eq!(q.count_ones(), 1);
            assert_eq!(q5_gather(q), 1 << i);
            // Value 4c + k (or 16 + 4c + k): byte k, bit c (or 4 + c).
            let (byte, bit) = (q.trailing_zeros() / 8, q.trailing_zeros() % 8);
            assert_eq!(byte, i % 4);
            assert_eq!(bit, (i % 16) / 4 + 4 * (i / 16));
        }
    }
}
