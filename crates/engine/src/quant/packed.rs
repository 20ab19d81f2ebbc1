//! The interleaved layout of the 32-block types (Q8_0, Q4_0, Q4_1) for the vector units:
//! rows in groups of [`GROUP`], block column by block column, so one 32-byte load holds four
//! weight bytes of each of the 8 rows (one 32-bit lane per row) and a product with a broadcast
//! activation word already has its lanes in output-row order (no horizontal sums).
//!
//! Per group and block column (`8 * block_bytes` bytes, the same size as the 8 plain blocks,
//! so a tensor can be interleaved in place):
//! - the 8 f16 scales `d` (16 bytes), then for Q4_1 the 8 f16 minima `m` (16 bytes);
//! - the quant bytes in chunks of 32: chunk `c`, lane `l` = bytes `4c..4c+4` of row `l`'s
//!   block (Q4: low nibbles are values `4c..4c+4`, high nibbles `16+4c..16+4c+4`).
//!
//! Rows past the last whole group stay in the plain layout after the groups.

use super::QType;

/// Rows per interleaved group.
pub const GROUP: usize = 8;

/// Whether `t` has an interleaved layout.
pub fn interleavable(t: QType) -> bool {
    matches!(t, QType::Q8_0 | QType::Q4_0 | QType::Q4_1)
}

/// (f16 scale fields per block, offset of the quant bytes, quant bytes per block).
fn geometry(t: QType) -> (usize, usize, usize) {
    match t {
        QType::Q8_0 => (1, 2, 32),
        QType::Q4_0 => (1, 2, 16),
        _ => (2, 4, 16),
    }
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
            dst[at..at + 4].copy_from_slice(&b[qs_off + 4 * c..qs_off + 4 * c + 4]);
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
        out[qs_off + 4 * c..qs_off + 4 * c + 4].copy_from_slice(&g[at..at + 4]);
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
        for t in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
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
}
