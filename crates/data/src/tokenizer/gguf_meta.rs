//! Reads only the `tokenizer.ggml.*` metadata of a GGUF file (memory-mapped; tensor data is never
//! touched), so tokenizing with a GGUF model does not load its weights. Every count and length
//! is checked against the bytes that are left.

use crate::error::{DataError, Result};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    /// An array we do not need (other element types); skipped.
    Other,
}

/// Tokenizer-related metadata of a GGUF file (keys under `tokenizer.` and `general.architecture`).
pub fn read(path: &Path) -> Result<HashMap<String, MetaValue>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    // SAFETY: the map is read-only and dropped before we return; a file truncated concurrently
    // would fault, which is the accepted risk of memory-mapping model files.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
    parse(&map).map_err(|m| DataError::format(path, m))
}

fn parse(bytes: &[u8]) -> std::result::Result<HashMap<String, MetaValue>, String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4)? != b"GGUF" {
        return Err("not a GGUF file (bad magic)".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 or 3)"));
    }
    let _tensors = r.u64()?;
    let kv_count = r.u64()?;
    // Each entry takes at least 12 bytes; a larger count cannot be real.
    if kv_count > (bytes.len() / 12) as u64 {
        return Err(format!(
            "metadata count {kv_count} is larger than the file allows"
        ));
    }
    let mut out = HashMap::new();
    for _ in 0..kv_count {
        let key = r.string().map_err(|e| format!("metadata key: {e}"))?;
        let ty = r.u32()?;
        let wanted = key.starts_with("tokenizer.") || key == "general.architecture";
        let value = r
            .value(ty, wanted)
            .map_err(|e| format!("metadata {key}: {e}"))?;
        if wanted {
            out.insert(key, value);
        }
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {} (need {n} more)", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn len(&mut self) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(format!("length {n} runs past the end of the file"));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.len()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    fn scalar(&mut self, ty: u32) -> std::result::Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::Int(self.arr::<1>()?[0] as i64),
            1 => MetaValue::Int(self.arr::<1>()?[0] as i8 as i64),
            2 => MetaValue::Int(u16::from_le_bytes(self.arr()?) as i64),
            3 => MetaValue::Int(i16::from_le_bytes(self.arr()?) as i64),
            4 => MetaValue::Int(self.u32()? as i64),
            5 => MetaValue::Int(i32::from_le_bytes(self.arr()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.arr()?) as f64),
            7 => MetaValue::Bool(self.arr::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            10 => MetaValue::Int(self.u64()? as i64),
            11 => MetaValue::Int(i64::from_le_bytes(self.arr()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.arr()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }

    fn value(&mut self, ty: u32, keep: bool) -> std::result::Result<MetaValue, String> {
        if ty != 9 {
            return self.scalar(ty);
        }
        let elem = self.u32()?;
        let n = self.u64()?;
        // Smallest encoded size of one element; bounds `n` before anything is allocated.
        let min_size: u64 = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            _ => 8,
        };
        if n.saturating_mul(min_size) > (self.bytes.len() - self.pos) as u64 {
            return Err(format!(
                "array of {n} elements runs past the end of the file"
            ));
        }
        let n = n as usize;
        match elem {
            8 => {
                let mut v = Vec::with_capacity(if keep { n } else { 0 });
                for _ in 0..n {
                    let s = self.string()?;
                    if keep {
                        v.push(s);
                    }
                }
                Ok(if keep {
                    MetaValue::Strs(v)
                } else {
                    MetaValue::Other
                })
            }
            6 if keep => {
                let raw = self.take(n.checked_mul(4).ok_or("array too large")?)?;
                Ok(MetaValue::Floats(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ))
            }
            9 => Err("nested arrays are not supported".into()),
            _ => {
                let mut ints = Vec::with_capacity(if keep { n } else { 0 });
                for _ in 0..n {
                    let v = self.scalar(elem)?;
                    if keep {
                        if let MetaValue::Int(i) = v {
                            ints.push(i);
                        }
                    }
                }
                Ok(if keep {
                    MetaValue::Ints(ints)
                } else {
                    MetaValue::Other
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_magic_and_absurd_counts() {
        assert!(parse(b"GGUX\x03\0\0\0").is_err());
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        assert!(parse(&b).unwrap_err().contains("metadata count"));
    }

    #[test]
    fn reads_string_arrays() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let key = b"tokenizer.ggml.tokens";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        for s in ["a", "bc"] {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        }
        let m = parse(&b).unwrap();
        assert_eq!(
            m["tokenizer.ggml.tokens"],
            MetaValue::Strs(vec!["a".into(), "bc".into()])
        );
        b.truncate(b.len() - 1);
        assert!(parse(&b).is_err());
    }
}
