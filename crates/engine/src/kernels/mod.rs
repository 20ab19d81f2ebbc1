//! f32 kernels, each with its forward and backward side by side (llm.c style). Buffers are
//! allocated by the caller (the model's `Workspace`) once; kernels only read and write them.
//!
//! Threading: rows are split into fixed chunks, and every reduction across rows is summed
//! chunk by chunk in a fixed order, so results never depend on scheduling.

pub mod attention;
pub mod classifier;
pub mod embedding;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub(crate) mod simd;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod gradcheck;

/// Rows per parallel task for row-wise kernels.
pub(crate) const ROW_CHUNK: usize = 16;

/// Sums `f(chunk_of_rows)` partial vectors of length `len` over fixed chunks of `n_rows`,
/// in chunk order, and adds the total into `acc`. Deterministic for any thread count.
pub(crate) fn reduce_rows_into<F>(acc: &mut [f32], n_rows: usize, chunk: usize, f: F)
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    let len = acc.len();
    let n_chunks = n_rows.div_ceil(chunk);
    let mut partials = vec![0.0f32; n_chunks * len];
    partials
        .par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(c, part)| {
            let start = c * chunk;
            f(start..(start + chunk).min(n_rows), part)
        });
    for part in partials.chunks(len.max(1)) {
        for (a, p) in acc.iter_mut().zip(part) {
            *a += p;
        }
    }
}

/// A raw pointer that may be shared between rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users only write through it to element sets that no other task touches.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole Send + Sync wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

pub(crate) use simd::{axpy, dot};
