//! Quantized weights kept in their GGUF block format, and the integer kernels that multiply
//! them with activations quantized once per input vector.
//!
//! - [`QType`]: the block layouts (ggml's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; F16,
//!   BF16, F32).
//! - [`QMatrix`]: a `[rows, cols]` row-major matrix of such blocks over shared bytes (the file
//!   read once; no copy per tensor).
//! - [`act`]: activations quantized to 8 bits, in blocks of 32 (for the 32-blocks) or 256 with
//!   16-value block sums (for the K-quants).
//! - [`dot`]: row dot products, scalar reference and AVX2 (chosen at run time), `R` activation
//!   rows per weight-row load.
//! - [`matmul`]: the multithreaded matrix-vector (decode) and matrix-matrix (prefill) products.
//! - [`model`]: a LLaMA model whose matrices are `QMatrix`.

pub mod act;
#[cfg(target_arch = "x86_64")]
pub mod amx_kquant;
#[cfg(target_arch = "x86_64")]
pub mod amx_prefill;
pub mod dot;
pub mod float;
pub mod matmul;
pub mod model;
pub mod packed;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_512;
#[cfg(target_arch = "x86_64")]
mod x86_bf16dot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_bf16gemm;
#[cfg(target_arch = "x86_64")]
mod x86_float;
#[cfg(target_arch = "x86_64")]
mod x86_kq512;
#[cfg(target_arch = "x86_64")]
mod x86_kqpanel;
#[cfg(target_arch = "x86_64")]
mod x86_q16panel;
#[cfg(target_arch = "x86_64")]
mod x86_q5;
#[cfg(target_arch = "x86_64")]
mod x86_strip;

pub use act::{ActKind, ActPrecision, BlockQ16, BlockQ8, BlockQ8K, QuantizedActs};
pub use matmul::{qmatmul_bt, qmatvec_many, QMatVec};
pub use model::{QLayer, QuantModel};
pub use scalar::dequantize_row;

use std::sync::Arc;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;
/// Values per block of the 32-block types.
pub const QK: usize = 32;

/// The storage type of a weight matrix (ggml block layouts, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl QType {
    pub const ALL: [QType; 11] = [
        QType::F32,
        QType::F16,
        QType::BF16,
        QType::Q8_0,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "F32",
            QType::F16 => "F16",
            QType::BF16 => "BF16",
            QType::Q8_0 => "Q8_0",
            QType::Q4_0 => "Q4_0",
            QType::Q4_1 => "Q4_1",
            QType::Q5_0 => "Q5_0",
            QType::Q5_1 => "Q5_1",
            QType::Q4K => "Q4_K",
            QType::Q5K => "Q5_K",
            QType::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q8_0 | QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => QK,
            QType::Q4K | QType::Q5K | QType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q8_0 => 34,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    /// How the activation a row of this type meets must be prepared.
    pub fn act_kind(self) -> ActKind {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => ActKind::F32,
            QType::Q8_0 | QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => ActKind::Q8,
            QType::Q4K | QType::Q5K | QType::Q6K => ActKind::Q8K,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error("{name}: {cols} columns is not a whole number of {qtype} blocks of {block}")]
    Columns {
        name: String,
        qtype: &'static str,
        cols: usize,
        block: usize,
    },
    #[error("{name}: {got} bytes at offset {offset}, but [{rows}, {cols}] {qtype} needs {want} and the buffer holds {len}")]
    Bytes {
        name: String,
        qtype: &'static str,
        rows: usize,
        cols: usize,
        offset: usize,
        got: usize,
        want: usize,
        len: usize,
    },
    #[error("{name}: shape [{rows}, {cols}], expected [{want_rows}, {want_cols}]")]
    Shape {
        name: String,
        rows: usize,
        cols: usize,
        want_rows: usize,
        want_cols: usize,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Bytes shared by several matrices (a whole model file read once).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A `[rows, cols]` row-major weight matrix stored as blocks of `qtype`, every row a whole
/// number of blocks.
#[derive(Clone)]
pub struct QMatrix {
    qtype: QType,
    rows: usize,
    cols: usize,
    buf: SharedBytes,
    offset: usize,
    /// Whole groups of 8 rows in the [`packed`] layout (rows past the last group plain).
    interleaved: bool,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QMatrix({} [{}, {}]{})",
            self.qtype.name(),
            self.rows,
            self.cols,
            if self.interleaved { " interleaved" } else { "" }
        )
    }
}

impl QMatrix {
    /// The matrix at `offset..offset + rows * row_bytes` of `buf`; `name` is for errors.
    pub fn new(
        name: &str,
        qtype: QType,
        rows: usize,
        cols: usize,
        buf: SharedBytes,
        offset: usize,
    ) -> Result<QMatrix, QuantError> {
        if !cols.is_multiple_of(qtype.block_len()) || cols == 0 {
            return Err(QuantError::Columns {
                name: name.into(),
                qtype: qtype.name(),
                cols,
                block: qtype.block_len(),
            });
        }
        let want = rows.saturating_mul(cols / qtype.block_len() * qtype.block_bytes());
        let len = (*buf).as_ref().len();
        if offset.checked_add(want).is_none_or(|end| end > len) {
            return Err(QuantError::Bytes {
                name: name.into(),
                qtype: qtype.name(),
                rows,
                cols,
                offset,
                got: len.saturating_sub(offset),
                want,
                len,
            });
        }
        Ok(QMatrix {
            qtype,
            rows,
            cols,
            buf,
            offset,
            interleaved: false,
        })
    }

    /// Like [`QMatrix::new`] for bytes already interleaved in place by
    /// [`packed::interleave_in_place`] (plain when `qtype` has no interleaved layout).
    pub fn new_interleaved(
        name: &str,
        qtype: QType,
        rows: usize,
        cols: usize,
        buf: SharedBytes,
        offset: usize,
    ) -> Result<QMatrix, QuantError> {
        let mut m = QMatrix::new(name, qtype, rows, cols, buf, offset)?;
        m.interleaved = packed::interleavable(qtype);
        Ok(m)
    }

    /// This matrix in the interleaved layout (a copy; itself when there is none for its type
    /// or it is interleaved already).
    pub fn interleaved(&self) -> QMatrix {
        if self.interleaved || !packed::interleavable(self.qtype) {
            return self.clone();
        }
        let mut bytes = self.bytes().to_vec();
        packed::interleave_in_place(self.qtype, self.rows, self.cols, &mut bytes);
        QMatrix {
            buf: Arc::new(bytes),
            offset: 0,
            interleaved: true,
            ..self.clone()
        }
    }

    /// Whether whole groups of 8 rows are in the interleaved layout.
    pub fn is_interleaved(&self) -> bool {
        self.interleaved
    }

    /// Rows in interleaved groups (a multiple of 8; 0 for a plain matrix).
    pub fn grouped_rows(&self) -> usize {
        if self.interleaved {
            self.rows / packed::GROUP * packed::GROUP
        } else {
            0
        }
    }

    /// The interleaved bytes of group `g` (rows `8g..8g+8`).
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = packed::GROUP * self.row_bytes();
        &self.bytes()[g * gb..(g + 1) * gb]
    }

    /// An owned matrix from its block bytes.
    pub fn from_bytes(
        name: &str,
        qtype: QType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<QMatrix, QuantError> {
        QMatrix::new(name, qtype, rows, cols, Arc::new(bytes), 0)
    }

    /// An F32 matrix holding `values` (`[rows, cols]`).
    pub fn from_f32(
        name: &str,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<QMatrix, QuantError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        QMatrix::from_bytes(name, QType::F32, rows, cols, bytes)
    }

    pub fn qtype(&self) -> QType {
        self.qtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.qtype.block_len() * self.qtype.block_bytes()
    }

    /// All block bytes, row after row.
    pub fn bytes(&self) -> &[u8] {
        let b: &[u8] = (*self.buf).as_ref();
        &b[self.offset..self.offset + self.rows * self.row_bytes()]
    }

    /// The block bytes of row `r` as stored: plain rows only (every row of a plain matrix, the
    /// rows past [`QMatrix::grouped_rows`] of an interleaved one). [`QMatrix::row_blocks`]
    /// gives any row.
    pub fn row(&self, r: usize) -> &[u8] {
        assert!(
            r >= self.grouped_rows(),
            "row {r} of {self:?} is interleaved: use row_blocks"
        );
        let rb = self.row_bytes();
        &self.bytes()[r * rb..(r + 1) * rb]
    }

    /// The plain block bytes of row `r`, whatever the layout.
    pub fn row_blocks(&self, r: usize) -> std::borrow::Cow<'_, [u8]> {
        if r >= self.grouped_rows() {
            return std::borrow::Cow::Borrowed(self.row(r));
        }
        let mut out = vec![0u8; self.row_bytes()];
        let g = r / packed::GROUP;
        packed::plain_row(self.qtype, self.group(g), r % packed::GROUP, &mut out);
        std::borrow::Cow::Owned(out)
    }

    /// Row `r` as f32 values (`out.len() == cols`).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        if r >= self.grouped_rows() {
            return dequantize_row(self.qtype, self.row(r), out);
        }
        // Block by block through a stack copy (no allocation per row).
        let (t, bb) = (self.qtype, self.qtype.block_bytes());
        let mut plain = [0u8; 34];
        let g = self.group(r / packed::GROUP);
        for (gb, o) in g
            .chunks_exact(packed::GROUP * bb)
            .zip(out.chunks_exact_mut(QK))
        {
            packed::plain_block(t, gb, r % packed::GROUP, &mut plain[..bb]);
            dequantize_row(t, &plain[..bb], o);
        }
    }

    /// The whole matrix as f32 (tests, small tensors).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(r, o);
        }
        out
    }
}
