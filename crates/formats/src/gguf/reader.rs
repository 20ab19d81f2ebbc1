//! GGUF v2/v3 parsing: header, metadata, tensor infos. Every count and offset is checked
//! against the bytes actually present before anything is allocated from it.

use super::quant::GgmlType;
use crate::error::{FormatError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // The shortest decimal that reads back as this f32 (1e-5, not 9.99999974e-6):
            // what the file's writer meant, so HF -> GGUF -> HF keeps config.json values.
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// A short description for reports (arrays by length, long strings cut).
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => {
                let mut cut = 80;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{:?}… ({} bytes)", &s[..cut], s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{} values]", a.len()),
            Value::Bool(b) => b.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// A parsed GGUF header: metadata in file order plus tensor infos.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    pub alignment: u64,
    /// Tensor name -> position in `tensors`.
    index: std::collections::HashMap<String, usize>,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Bounds on what a header may ask for (far above any real model, far below harm).
const MAX_DIMS: u32 = 4;
const MAX_STRING: u64 = 256 << 20;
const MAX_NESTING: u32 = 4;
/// Real vocabularies and merge lists stay far below this; it bounds the memory a header
/// of tiny elements could make us spend on `Value`s.
const MAX_ARRAY: u64 = 1 << 22;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                FormatError::invalid(
                    self.path,
                    field,
                    format!(
                        "needs {n} bytes at offset {} but the file ends at {} (truncated?)",
                        self.pos,
                        self.b.len()
                    ),
                )
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, f: &str) -> Result<u8> {
        Ok(self.take(1, f)?[0])
    }
    fn u16(&mut self, f: &str) -> Result<u16> {
        let b = self.take(2, f)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, f: &str) -> Result<u32> {
        let b = self.take(4, f)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, f: &str) -> Result<u64> {
        let b = self.take(8, f)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }
    fn string(&mut self, f: &str) -> Result<String> {
        let n = self.u64(f)?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(FormatError::invalid(
                self.path,
                f,
                format!(
                    "string length {n} exceeds the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        let b = self.take(n as usize, f)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FormatError::invalid(self.path, f, "string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, f: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(f)?),
            1 => Value::I8(self.u8(f)? as i8),
            2 => Value::U16(self.u16(f)?),
            3 => Value::I16(self.u16(f)? as i16),
            4 => Value::U32(self.u32(f)?),
            5 => Value::I32(self.u32(f)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(f)?)),
            7 => match self.u8(f)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(FormatError::invalid(self.path, f, format!("bool byte {b}"))),
            },
            8 => Value::String(self.string(f)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(FormatError::invalid(self.path, f, "arrays nested too deep"));
                }
                let elem = self.u32(f)?;
                let n = self.u64(f)?;
                // Every element takes at least one byte: a count above the bytes left is a lie.
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                if n > MAX_ARRAY || n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(FormatError::invalid(
                        self.path,
                        f,
                        format!(
                            "array of {n} values does not fit in the {} bytes left",
                            self.remaining()
                        ),
                    ));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, f, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(f)?),
            11 => Value::I64(self.u64(f)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(f)?)),
            t => {
                return Err(FormatError::invalid(
                    self.path,
                    f,
                    format!("unknown value type {t}"),
                ))
            }
        })
    }
}

/// Parses the header of GGUF bytes (the whole file, so tensor extents can be checked).
pub fn parse_header(path: &Path, b: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { b, pos: 0, path };
    let magic = c.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err(FormatError::invalid(
            path,
            "magic",
            format!("expected \"GGUF\", found {magic:02x?}"),
        ));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(FormatError::unsupported(
            path,
            "version",
            format!("{version} (GGUF v2 and v3 are read)"),
        ));
    }
    let n_tensors = c.u64("tensor_count")?;
    let n_kv = c.u64("metadata_kv_count")?;
    // A key-value pair takes at least 12 bytes, a tensor info at least 24.
    if n_kv.checked_mul(12).is_none_or(|x| x > c.remaining()) {
        return Err(FormatError::invalid(
            path,
            "metadata_kv_count",
            format!("{n_kv} does not fit in the file"),
        ));
    }
    if n_tensors.checked_mul(24).is_none_or(|x| x > c.remaining()) {
        return Err(FormatError::invalid(
            path,
            "tensor_count",
            format!("{n_tensors} does not fit in the file"),
        ));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a <= 1 << 20 && a.is_power_of_two() => a,
            _ => {
                return Err(FormatError::invalid(
                    path,
                    "general.alignment",
                    format!("{v:?} is not a power of two up to 1 MiB"),
                ))
            }
        },
    };
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let nd = c.u32(&name)?;
        if nd == 0 || nd > MAX_DIMS {
            return Err(FormatError::invalid(
                path,
                &name,
                format!("{nd} dimensions (1 to {MAX_DIMS} allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(nd as usize);
        let mut n_elements: u64 = 1;
        for _ in 0..nd {
            let d = c.u64(&name)?;
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= b.len() as u64 * 8)
                .ok_or_else(|| {
                    FormatError::invalid(path, &name, format!("dimensions {dims:?}x{d} hold more values than a {}-byte file can (truncated or corrupt)", b.len()))
                })?;
            dims.push(d);
        }
        let tid = c.u32(&name)?;
        let ggml_type = GgmlType::from_id(tid).ok_or_else(|| {
            FormatError::unsupported(
                path,
                format!("{name} type"),
                format!(
                    "ggml type {tid} (read: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)"
                ),
            )
        })?;
        let offset = c.u64(&name)?;
        if offset % alignment != 0 {
            return Err(FormatError::invalid(
                path,
                format!("{name} offset"),
                format!("{offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        if dims[0] % ggml_type.block_len() as u64 != 0 {
            return Err(FormatError::invalid(
                path,
                &name,
                format!(
                    "row length {} is not a whole number of {} blocks",
                    dims[0],
                    ggml_type.name()
                ),
            ));
        }
        let n_bytes = ggml_type
            .bytes_for(n_elements)
            .ok_or_else(|| FormatError::invalid(path, &name, "size overflows"))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        });
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > b.len() as u64) {
            return Err(FormatError::invalid(
                path,
                format!("{} offset", t.name),
                format!(
                    "data at {}+{} ({} bytes) runs past the end of the file ({} bytes)",
                    data_offset,
                    t.offset,
                    t.n_bytes,
                    b.len()
                ),
            ));
        }
    }
    let mut index = std::collections::HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if index.insert(t.name.clone(), i).is_some() {
            return Err(FormatError::invalid(path, &t.name, "tensor named twice"));
        }
    }
    Ok(GgufHeader {
        path: path.to_path_buf(),
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
        index,
    })
}

/// Dequantized values of tensor `t` from the whole-file bytes `b` (extent checked by
/// `parse_header`; checked again here for headers built by hand).
pub fn read_tensor_f32(h: &GgufHeader, b: &[u8], t: &TensorInfo, out: &mut [f32]) -> Result<()> {
    if out.len() as u64 != t.n_elements {
        return Err(FormatError::invalid(
            &h.path,
            &t.name,
            format!("{} values, expected {}", t.n_elements, out.len()),
        ));
    }
    let src = h
        .data_offset
        .checked_add(t.offset)
        .and_then(|start| Some((start, start.checked_add(t.n_bytes)?)))
        .and_then(|(start, end)| b.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?))
        .ok_or_else(|| {
            FormatError::invalid(&h.path, &t.name, "data runs past the end of the file")
        })?;
    super::quant::dequantize(t.ggml_type, src, out);
    Ok(())
}
