//! safetensors files: memory-mapped reading with dtype conversion to f32, and writing.
//!
//! Header parsing is the `safetensors` crate's (it bounds the header, checks that offsets
//! are contiguous and cover the file exactly); we add dtype and shape checks per tensor.

use crate::error::{FormatError, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Storage types we read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }
    fn st(self) -> Dtype {
        match self {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
        }
    }
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// A memory-mapped safetensors file whose header has been parsed and checked once.
pub struct SafetensorsFile {
    pub path: PathBuf,
    bytes: Bytes,
    /// name -> (dtype, shape, absolute byte range).
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
    metadata: Option<HashMap<String, String>>,
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn raw(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; a file truncated under us by another process
            // is outside what any reader can defend against (same as every mmap loader).
            Bytes::Mapped(
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?,
            )
        };
        SafetensorsFile::index(path, bytes)
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsFile> {
        SafetensorsFile::index(path, Bytes::Owned(bytes))
    }

    /// Parses the header once (the crate checks that offsets are contiguous and cover the
    /// file exactly) and keeps an index of every tensor.
    fn index(path: &Path, bytes: Bytes) -> Result<SafetensorsFile> {
        let (n, meta) = SafeTensors::read_metadata(bytes.raw())
            .map_err(|e| FormatError::invalid(path, "header", e.to_string()))?;
        let base = 8 + n;
        let mut index = HashMap::new();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            let range = base + a..base + b;
            if bytes.raw().get(range.clone()).is_none() {
                return Err(FormatError::invalid(
                    path,
                    &name,
                    "data offsets outside the file",
                ));
            }
            index.insert(name, (info.dtype, info.shape.clone(), range));
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            metadata: meta.metadata().clone(),
            bytes,
            index,
        })
    }

    /// The header parsed by the `safetensors` crate (for tensors of other dtypes, e.g. int32).
    pub fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(self.bytes.raw())
            .map_err(|e| FormatError::invalid(&self.path, "header", e.to_string()))
    }

    /// Names, dtypes and shapes of every tensor, sorted by name.
    pub fn entries(&self) -> Result<Vec<(String, String, Vec<usize>)>> {
        let mut v: Vec<_> = self
            .index
            .iter()
            .map(|(n, (dt, shape, _))| (n.clone(), format!("{dt:?}"), shape.clone()))
            .collect();
        v.sort();
        Ok(v)
    }

    pub fn metadata(&self) -> Result<Option<HashMap<String, String>>> {
        Ok(self.metadata.clone())
    }

    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.index.contains_key(name))
    }

    fn get(&self, name: &str) -> Result<&(Dtype, Vec<usize>, std::ops::Range<usize>)> {
        self.index
            .get(name)
            .ok_or_else(|| FormatError::invalid(&self.path, name, "tensor missing"))
    }

    /// Fails unless tensor `name` exists with `shape` and a dtype we read.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let (dtype, have, _) = self.get(name)?;
        if have != shape {
            return Err(FormatError::invalid(
                &self.path,
                name,
                format!("shape {have:?}, expected {shape:?} from config.json"),
            ));
        }
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(FormatError::unsupported(
                &self.path,
                name,
                format!("dtype {dtype:?} (f32, f16 and bf16 are read)"),
            ));
        }
        Ok(())
    }

    /// Reads tensor `name` (f32/f16/bf16) into `out`, checking its shape against `shape`.
    pub fn read_f32(&self, name: &str, shape: &[usize], out: &mut [f32]) -> Result<()> {
        self.check_shape(name, shape)?;
        let (dtype, _, range) = self.get(name)?;
        convert_to_f32(
            &self.path,
            name,
            *dtype,
            &self.bytes.raw()[range.clone()],
            out,
        )
    }

    /// Reads tensor `name` whatever its shape; returns (shape, values).
    pub fn read_any_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, range) = self.get(name)?;
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(FormatError::unsupported(
                &self.path,
                name,
                format!("dtype {dtype:?} (f32, f16 and bf16 are read)"),
            ));
        }
        let n: usize = shape.iter().product();
        let mut out = vec![0.0; n];
        convert_to_f32(
            &self.path,
            name,
            *dtype,
            &self.bytes.raw()[range.clone()],
            &mut out,
        )?;
        Ok((shape.clone(), out))
    }
}

fn convert_to_f32(
    file: &Path,
    name: &str,
    dtype: Dtype,
    data: &[u8],
    out: &mut [f32],
) -> Result<()> {
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(FormatError::unsupported(
                file,
                name,
                format!("dtype {other:?} (f32, f16 and bf16 are read)"),
            ))
        }
    };
    if data.len() != out.len() * size {
        return Err(FormatError::invalid(
            file,
            name,
            format!(
                "{} data bytes for {} elements of {dtype:?}",
                data.len(),
                out.len()
            ),
        ));
    }
    match dtype {
        Dtype::F32 => crate::assemble::f32s_from_le(data, out),
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
    Ok(())
}

/// One tensor to write: converted to the output dtype only when the writer asks for it.
pub struct OutTensor<'a> {
    pub shape: Vec<usize>,
    pub data: &'a [f32],
    pub dtype: DType,
}

impl View for OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.st()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let mut out = Vec::with_capacity(self.data_len());
        match self.dtype {
            DType::F32 => self
                .data
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            DType::F16 => self
                .data
                .iter()
                .for_each(|x| out.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes())),
            DType::BF16 => self
                .data
                .iter()
                .for_each(|x| out.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())),
        }
        Cow::Owned(out)
    }
    fn data_len(&self) -> usize {
        self.data.len() * self.dtype.size()
    }
}

/// Writes `tensors` (name, shape, values) to `path` in `dtype`, with `{"format":"pt"}` metadata
/// so that transformers accepts the file.
pub fn write(path: &Path, tensors: Vec<(String, Vec<usize>, &[f32])>, dtype: DType) -> Result<()> {
    let views = tensors
        .into_iter()
        .map(|(name, shape, data)| (name, OutTensor { shape, data, dtype }));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(meta), path)
        .map_err(|e| FormatError::invalid(path, "write", e.to_string()))?;
    apply_umask(path)
}

/// The crate writes through a private temporary file (mode 0600) and renames it; give the
/// result the mode any other file of ours gets: 0666 less the process's umask.
#[cfg(unix)]
fn apply_umask(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = 0o666 & !process_umask();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| FormatError::io(path, e))
}

#[cfg(not(unix))]
fn apply_umask(_path: &Path) -> Result<()> {
    Ok(())
}

/// The umask, read without changing it (Linux reports it in /proc/self/status); 022 elsewhere.
#[cfg(unix)]
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_each_dtype() {
        let dir = std::env::temp_dir().join(format!("nf-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals = [1.0f32, -2.5, 0.15625, 3.0e-3, 65504.0, 7.0];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let p = dir.join(format!("{}.safetensors", dt.name()));
            write(&p, vec![("a".into(), vec![2, 3], &vals[..])], dt).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o666 & !process_umask(), "written with the umask");
            }
            let f = SafetensorsFile::open(&p).unwrap();
            let mut out = [0.0f32; 6];
            f.read_f32("a", &[2, 3], &mut out).unwrap();
            for (a, b) in vals.iter().zip(out) {
                let tol = match dt {
                    DType::F32 => 0.0,
                    DType::F16 => a.abs() * 1e-3,
                    DType::BF16 => a.abs() * 8e-3,
                };
                assert!((a - b).abs() <= tol, "{dt:?}: {a} vs {b}");
            }
            let err = f.read_f32("a", &[3, 2], &mut out).unwrap_err().to_string();
            assert!(err.contains("shape"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_garbage_headers_are_errors() {
        let p = Path::new("x.safetensors");
        assert!(SafetensorsFile::from_bytes(p, vec![]).is_err());
        assert!(SafetensorsFile::from_bytes(p, vec![255; 8]).is_err());
        let mut b = 20u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{\"a\":{\"dtype\":\"F32\"}");
        let e = SafetensorsFile::from_bytes(p, b).err().unwrap().to_string();
        assert!(e.contains("x.safetensors") && e.contains("header"), "{e}");
    }
}
