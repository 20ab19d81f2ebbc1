//! Random quantized matrices and vectors for the kernel tests.

use engine::quant::{QMatrix, QType};

/// A small deterministic generator (64-bit LCG).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn f(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

pub fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// Random but well-formed blocks of `t` for a `[rows, cols]` matrix (scales of a realistic
/// size, every quantized bit random).
pub fn random_matrix(t: QType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut g = Lcg(seed);
    let nb = rows * cols / t.block_len();
    let bb = t.block_bytes();
    let mut bytes: Vec<u8> = (0..nb * bb).map(|_| g.next() as u8).collect();
    for b in bytes.chunks_exact_mut(bb) {
        match t {
            QType::F32 => b.copy_from_slice(&g.f().to_le_bytes()),
            QType::F16 => put_f16(b, 0, g.f()),
            QType::BF16 => b.copy_from_slice(&half::bf16::from_f32(g.f()).to_le_bytes()),
            QType::Q8_0 | QType::Q4_0 | QType::Q5_0 => put_f16(b, 0, 0.01 + 0.02 * g.f().abs()),
            QType::Q4_1 | QType::Q5_1 => {
                put_f16(b, 0, 0.01 + 0.02 * g.f().abs());
                put_f16(b, 2, -0.1 * g.f().abs());
            }
            QType::Q4K | QType::Q5K => {
                put_f16(b, 0, 0.001 + 0.002 * g.f().abs());
                put_f16(b, 2, 0.001 + 0.002 * g.f().abs());
            }
            QType::Q6K => put_f16(b, 208, 0.001 + 0.002 * g.f().abs()),
        }
    }
    QMatrix::from_bytes("test", t, rows, cols, bytes).expect("well-formed matrix")
}

pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut g = Lcg(seed);
    (0..n).map(|_| g.f() * 2.0).collect()
}
