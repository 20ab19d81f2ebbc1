//! The KV cache: keys and values of every layer, stored as f32 or, to halve its memory and
//! the bytes attention reads per token, as f16 or bf16 (rounded to nearest on write, widened
//! to f32 on read; every product stays f32).

use half::{bf16, f16};

/// The element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F32,
    F16,
    BF16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::BF16 => "bf16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 | KvType::BF16 => 2,
        }
    }
}

/// One layer's keys or values, `[capacity, kv_dim]`.
pub(crate) enum KvStore {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl KvStore {
    pub(crate) fn new(t: KvType, len: usize) -> KvStore {
        match t {
            KvType::F32 => KvStore::F32(vec![0.0; len]),
            KvType::F16 => KvStore::F16(vec![f16::ZERO; len]),
            KvType::BF16 => KvStore::BF16(vec![bf16::ZERO; len]),
        }
    }

    /// Stores `src` at element offset `at`.
    pub(crate) fn write(&mut self, at: usize, src: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        let end = at + src.len();
        match self {
            KvStore::F32(v) => v[at..end].copy_from_slice(src),
            KvStore::F16(v) => v[at..end].convert_from_f32_slice(src),
            KvStore::BF16(v) => v[at..end].convert_from_f32_slice(src),
        }
    }

    /// Elements `at..at + tmp.len()` as f32: borrowed for an f32 cache, else widened into `tmp`.
    #[inline]
    pub(crate) fn read<'a>(&'a self, at: usize, tmp: &'a mut [f32]) -> &'a [f32] {
        use half::slice::HalfFloatSliceExt;
        let end = at + tmp.len();
        match self {
            KvStore::F32(v) => &v[at..end],
            KvStore::F16(v) => {
                v[at..end].convert_to_f32_slice(tmp);
                tmp
            }
            KvStore::BF16(v) => {
                v[at..end].convert_to_f32_slice(tmp);
                tmp
            }
        }
    }
}

/// Keys and values of every layer for positions `0..len`, room for `capacity`.
pub struct KvCache {
    pub(crate) k: Vec<KvStore>,
    pub(crate) v: Vec<KvStore>,
    pub(crate) kv_dim: usize,
    pub(crate) len: usize,
    pub(crate) capacity: usize,
    kind: KvType,
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache::with_type(n_layers, kv_dim, capacity, KvType::F32)
    }

    pub fn with_type(n_layers: usize, kv_dim: usize, capacity: usize, kind: KvType) -> KvCache {
        let layer = || KvStore::new(kind, capacity * kv_dim);
        KvCache {
            k: (0..n_layers).map(|_| layer()).collect(),
            v: (0..n_layers).map(|_| layer()).collect(),
            kv_dim,
            len: 0,
            capacity,
            kind,
        }
    }

    pub fn kind(&self) -> KvType {
        self.kind
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions `n..`; the next token is written at position `n`.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        2 * self.k.len() * self.capacity * self.kv_dim * self.kind.bytes()
    }

    /// Stores keys and values `[n, kv_dim]` of layer `l` from position `pos`.
    pub(crate) fn store(&mut self, l: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.k[l].write(pos * self.kv_dim, k);
        self.v[l].write(pos * self.kv_dim, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_caches_round_to_nearest_and_read_back() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.173).collect();
        for (t, rel) in [
            (KvType::F32, 0.0),
            (KvType::F16, 1.0 / 2048.0),
            (KvType::BF16, 1.0 / 256.0),
        ] {
            let mut c = KvCache::with_type(2, 32, 3, t);
            c.store(1, 1, &x[..32], &x[32..]);
            let mut tmp = [0f32; 32];
            let k = c.k[1].read(32, &mut tmp).to_vec();
            let v = c.v[1].read(32, &mut tmp).to_vec();
            for (a, b) in k.iter().chain(&v).zip(&x) {
                assert!((a - b).abs() <= rel * b.abs(), "{t:?}: {a} vs {b}");
            }
            assert_eq!(c.bytes(), 2 * 2 * 3 * 32 * t.bytes());
        }
    }
}
