//! llama2.c model files (`.bin`: legacy version 0, "ak42" versions 1 and 2) and its
//! `tokenizer.bin`. Q/K rows are stored in Meta's interleaved RoPE order.

use crate::assemble::{build_params, f32s_from_le, to_file_rope, to_internal_rope};
use crate::error::{FormatError, Result};
use crate::model::{LoadedModel, ModelFormat, TokenizerSource};
use engine::params::names;
use engine::{ModelConfig, Params};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC_AK42: u32 = 0x616b_3432;
const V12_HEADER: usize = 256;

/// The header of a llama2.c model file.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub config: ModelConfig,
    /// Q8_0 group size (version 2 only).
    pub group_size: Option<usize>,
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off + 4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn positive(file: &Path, field: &str, v: i32) -> Result<usize> {
    if v <= 0 {
        return Err(FormatError::invalid(
            file,
            field,
            format!("{v} (must be positive)"),
        ));
    }
    Ok(v as usize)
}

/// Parses the header (the 7 int32 shape fields, after the magic and version if present).
pub fn parse_header(file: &Path, b: &[u8]) -> Result<Header> {
    let short = || {
        FormatError::invalid(
            file,
            "header",
            format!("file is {} bytes, too short for a llama2.c header", b.len()),
        )
    };
    let magic = i32_at(b, 0).ok_or_else(short)? as u32;
    let (version, base) = if magic == MAGIC_AK42 {
        let v = i32_at(b, 4).ok_or_else(short)?;
        if v != 1 && v != 2 {
            return Err(FormatError::unsupported(
                file,
                "version",
                format!("{v} (versions 0, 1 and 2 are read)"),
            ));
        }
        if b.len() < V12_HEADER {
            return Err(short());
        }
        (v as u32, 8)
    } else {
        (0, 0)
    };
    let f = |i: usize| i32_at(b, base + 4 * i).ok_or_else(short);
    let vocab_raw = f(5)?;
    let (vocab, shared) = if version == 0 {
        // Legacy: a negative vocab size means the classifier is stored separately.
        (vocab_raw.unsigned_abs() as i32, vocab_raw > 0)
    } else {
        let flag = *b.get(base + 28).ok_or_else(short)?;
        (vocab_raw, flag != 0)
    };
    let n_heads = positive(file, "n_heads", f(3)?)?;
    let config = ModelConfig {
        dim: positive(file, "dim", f(0)?)?,
        hidden_dim: positive(file, "hidden_dim", f(1)?)?,
        n_layers: positive(file, "n_layers", f(2)?)?,
        n_heads,
        n_kv_heads: positive(file, "n_kv_heads", f(4)?)?,
        vocab_size: positive(file, "vocab_size", vocab)?,
        max_seq_len: positive(file, "seq_len", f(6)?)?,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_embeddings: shared,
        qkv_bias: false,
    };
    config
        .validate()
        .map_err(|e| FormatError::config(file, e))?;
    let group_size = if version == 2 {
        let g = positive(file, "group_size", i32_at(b, base + 29).ok_or_else(short)?)?;
        Some(g)
    } else {
        None
    };
    Ok(Header {
        version,
        config,
        group_size,
    })
}

/// Tensors in file order (HF names), per version.
fn tensor_order(h: &Header) -> Vec<String> {
    let c = &h.config;
    let per_layer = |s: &str| {
        (0..c.n_layers)
            .map(|l| names::layer(l, s))
            .collect::<Vec<_>>()
    };
    let mut v: Vec<String> = Vec::new();
    if h.version == 0 {
        v.push(names::EMBED.into());
        for s in [
            names::ATTN_NORM,
            names::WQ,
            names::WK,
            names::WV,
            names::WO,
            names::FFN_NORM,
            names::W_GATE,
            names::W_DOWN,
            names::W_UP,
        ] {
            v.extend(per_layer(s));
        }
        v.push(names::FINAL_NORM.into());
        v.push("freq_cis".into());
    } else {
        v.extend(per_layer(names::ATTN_NORM));
        v.extend(per_layer(names::FFN_NORM));
        v.push(names::FINAL_NORM.into());
        if h.version == 1 {
            v.push(names::EMBED.into());
        }
        let mats = [
            names::WQ,
            names::WK,
            names::WV,
            names::WO,
            names::W_GATE,
            names::W_DOWN,
            names::W_UP,
        ];
        if h.version == 2 {
            v.push(names::EMBED.into());
        }
        for s in mats {
            v.extend(per_layer(s));
        }
    }
    if !c.tied_embeddings {
        v.push(names::LM_HEAD.into());
    }
    v
}

/// Where each tensor starts (name -> (byte offset, values)), checked against the file size.
fn tensor_offsets(
    file: &Path,
    h: &Header,
    file_len: usize,
) -> Result<HashMap<String, (usize, usize)>> {
    let cfg = &h.config;
    let header: u64 = match h.version {
        0 => 28,
        _ => V12_HEADER as u64,
    };
    // The total size first, by arithmetic: a lying header is refused before any per-tensor
    // work (a header may claim a thousand layers of a tiny file).
    let params = cfg.param_count() as u64;
    let norms = (cfg.n_layers as u64 * 2 + 1) * cfg.dim as u64;
    let expected = match h.version {
        0 => header + 4 * (params + (cfg.max_seq_len * cfg.head_dim()) as u64),
        1 => header + 4 * params,
        _ => {
            let g = h.group_size.unwrap_or(1) as u64;
            let mats = params - norms;
            header + 4 * norms + mats + 4 * (mats / g)
        }
    };
    if expected != file_len as u64 {
        return Err(FormatError::invalid(
            file,
            "file size",
            format!("header describes {expected} bytes of model, file has {file_len} (truncated, or header fields wrong)"),
        ));
    }
    let layout = engine::ParamLayout::for_config(cfg);
    let specs: HashMap<&str, &engine::TensorSpec> = layout
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut offsets = HashMap::new();
    let mut pos = header;
    for name in tensor_order(h) {
        let spec = specs.get(name.as_str()).copied();
        let n = match spec {
            Some(t) => t.numel(),
            None => cfg.max_seq_len * cfg.head_dim(), // freq_cis real + imag
        };
        let bytes = if h.version == 2 && spec.is_some_and(|t| t.shape.len() == 2) {
            let g = h.group_size.unwrap_or(1);
            if n % g != 0 {
                return Err(FormatError::invalid(
                    file,
                    "group_size",
                    format!("{g} does not divide {name} ({n} values)"),
                ));
            }
            n as u64 + 4 * (n / g) as u64
        } else {
            4 * n as u64
        };
        offsets.insert(name, (pos as usize, n));
        pos += bytes;
    }
    if pos != file_len as u64 {
        return Err(FormatError::invalid(
            file,
            "file size",
            format!("header describes {pos} bytes of model, file has {file_len} (truncated, or header fields wrong)"),
        ));
    }
    Ok(offsets)
}

/// The header of a model file, checked against the file's size (no weights read).
pub fn inspect(file: &Path, b: &[u8]) -> Result<Header> {
    let h = parse_header(file, b)?;
    tensor_offsets(file, &h, b.len())?;
    Ok(h)
}

/// The header of a model file on disk, checked against its size (memory-mapped, nothing copied).
pub fn inspect_file(path: &Path) -> Result<Header> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if len < 28 {
        return Err(FormatError::invalid(
            path,
            "header",
            format!("file is {len} bytes, too short for a llama2.c header"),
        ));
    }
    // SAFETY: read-only map of a regular file.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
    inspect(path, &map)
}

/// Reads a llama2.c model from bytes already in memory. Returns the params and header.
pub fn parse_model(file: &Path, b: &[u8]) -> Result<(Params, Header)> {
    let h = parse_header(file, b)?;
    let cfg = &h.config;
    let offsets = tensor_offsets(file, &h, b.len())?;
    // The file size was checked against every tensor above.
    let params = build_params(
        file,
        cfg,
        |_, _| Ok(()),
        |name, shape, out| {
            let &(off, n) = offsets
                .get(name)
                .ok_or_else(|| FormatError::invalid(file, name, "tensor missing"))?;
            let is_q8 = h.version == 2 && shape.len() == 2;
            if is_q8 {
                let g = h.group_size.unwrap_or(1);
                let q = &b[off..off + n];
                let scales = &b[off + n..off + n + 4 * (n / g)];
                for (i, o) in out.iter_mut().enumerate() {
                    let s = &scales[4 * (i / g)..4 * (i / g) + 4];
                    *o = (q[i] as i8) as f32 * f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
            } else {
                f32s_from_le(&b[off..off + 4 * n], out);
            }
            to_internal_rope(name, shape, cfg, out);
            Ok(())
        },
    )?;
    Ok((params, h))
}

/// Finds the tokenizer that sits next to a model: `tokenizer.bin` or `tok{vocab}.bin`.
pub fn find_tokenizer(model: &Path, vocab: usize) -> Option<PathBuf> {
    let dir = model.parent()?;
    [format!("tok{vocab}.bin"), "tokenizer.bin".to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file() && p != model)
}

/// Loads a llama2.c `.bin` model (memory-mapped), with the tokenizer next to it if any.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if len < 28 {
        return Err(FormatError::invalid(
            path,
            "header",
            format!("file is {len} bytes, too short for a llama2.c header"),
        ));
    }
    // SAFETY: read-only map of a regular file.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
    let (params, h) = parse_model(path, &map)?;
    let tokenizer = find_tokenizer(path, h.config.vocab_size).map(TokenizerSource::Llama2cBin);
    let quant = if h.version == 2 { "Q8_0" } else { "F32" };
    Ok(LoadedModel {
        params,
        tokenizer,
        chat_template: None,
        // llama2.c's sentencepiece vocabularies: unk 0, bos 1, eos 2.
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        pad_token_id: None,
        add_bos: true,
        add_eos: false,
        bos_token: Some("<s>".into()),
        eos_token: Some("</s>".into()),
        generation_config: None,
        format: ModelFormat::Llama2c,
        source: format!("llama2.c v{} {quant}", h.version),
        path: path.to_path_buf(),
    })
}

/// Checks that llama2.c's fixed maths (theta 10000, eps 1e-5, no biases) can express `cfg`.
pub fn check_expressible(file: &Path, cfg: &ModelConfig) -> Result<()> {
    if cfg.rope_theta != 10000.0 {
        return Err(FormatError::unsupported(
            file,
            "rope_theta",
            format!("{} (llama2.c fixes it at 10000)", cfg.rope_theta),
        ));
    }
    if (cfg.norm_eps - 1e-5).abs() > 1e-12 {
        return Err(FormatError::unsupported(
            file,
            "norm_eps",
            format!("{} (llama2.c fixes it at 1e-5)", cfg.norm_eps),
        ));
    }
    if cfg.qkv_bias {
        return Err(FormatError::unsupported(
            file,
            "attention_bias",
            "llama2.c has no q/k/v biases",
        ));
    }
    if i32::try_from(cfg.vocab_size).is_err()
        || i32::try_from(cfg.dim.max(cfg.hidden_dim).max(cfg.max_seq_len)).is_err()
    {
        return Err(FormatError::unsupported(
            file,
            "header",
            "sizes do not fit in int32",
        ));
    }
    Ok(())
}

/// The legacy (version 0) file bytes of `params`.
pub fn model_bytes(file: &Path, params: &Params) -> Result<Vec<u8>> {
    let cfg = &params.config;
    check_expressible(file, cfg)?;
    let vocab = if cfg.tied_embeddings {
        cfg.vocab_size as i32
    } else {
        -(cfg.vocab_size as i32)
    };
    let mut out =
        Vec::with_capacity(28 + 4 * (params.data.len() + cfg.max_seq_len * cfg.head_dim()));
    for v in [
        cfg.dim as i32,
        cfg.hidden_dim as i32,
        cfg.n_layers as i32,
        cfg.n_heads as i32,
        cfg.n_kv_heads as i32,
        vocab,
        cfg.max_seq_len as i32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let h = Header {
        version: 0,
        config: cfg.clone(),
        group_size: None,
    };
    for name in tensor_order(&h) {
        if name == "freq_cis" {
            // cos then sin of pos * theta^(-2i/head_dim), in f32 as llama2.c's (PyTorch)
            // export computes them; run.c never reads these tables.
            let hs = cfg.head_dim();
            let theta = cfg.rope_theta as f32;
            let freqs: Vec<f32> = (0..hs / 2)
                .map(|i| 1.0 / theta.powf((2 * i) as f32 / hs as f32))
                .collect();
            for trig in [f32::cos, f32::sin] {
                for pos in 0..cfg.max_seq_len {
                    for f in &freqs {
                        out.extend_from_slice(&trig(pos as f32 * f).to_le_bytes());
                    }
                }
            }
            continue;
        }
        let spec = params
            .layout
            .find(&name)
            .ok_or_else(|| FormatError::invalid(file, &name, "tensor missing from the model"))?;
        let data = to_file_rope(&name, &spec.shape, cfg, &params.data[spec.range()]);
        data.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    Ok(out)
}

/// Writes a legacy (version 0) llama2.c model file.
pub fn write_model(path: &Path, params: &Params) -> Result<()> {
    let bytes = model_bytes(path, params)?;
    std::fs::write(path, bytes).map_err(|e| FormatError::io(path, e))
}

/// A llama2.c `tokenizer.bin`, raw: pieces as bytes (▁ already stored as a space, BOS/EOS
/// as "\n<s>\n" / "\n</s>\n"), with their merge scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama2cTokenizer {
    pub max_token_length: u32,
    pub scores: Vec<f32>,
    pub pieces: Vec<Vec<u8>>,
}

/// Parses `tokenizer.bin` bytes. Without `vocab_size`, reads entries until the end.
pub fn parse_tokenizer(
    file: &Path,
    b: &[u8],
    vocab_size: Option<usize>,
) -> Result<Llama2cTokenizer> {
    let max_len = i32_at(b, 0).ok_or_else(|| {
        FormatError::invalid(file, "max_token_length", "file shorter than 4 bytes")
    })?;
    if max_len < 0 {
        return Err(FormatError::invalid(
            file,
            "max_token_length",
            format!("{max_len} is negative"),
        ));
    }
    let mut pos = 4;
    let mut t = Llama2cTokenizer {
        max_token_length: max_len as u32,
        scores: Vec::new(),
        pieces: Vec::new(),
    };
    while vocab_size.map_or(pos < b.len(), |v| t.pieces.len() < v) {
        let i = t.pieces.len();
        let score = b
            .get(pos..pos + 4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .ok_or_else(|| {
                FormatError::invalid(file, format!("token {i}"), "file ends before its score")
            })?;
        let len = i32_at(b, pos + 4).ok_or_else(|| {
            FormatError::invalid(file, format!("token {i}"), "file ends before its length")
        })?;
        if len < 0 || len as usize > b.len() - (pos + 8) {
            return Err(FormatError::invalid(
                file,
                format!("token {i} length"),
                format!("{len} does not fit in the rest of the file"),
            ));
        }
        let piece = b[pos + 8..pos + 8 + len as usize].to_vec();
        pos += 8 + len as usize;
        t.scores.push(score);
        t.pieces.push(piece);
    }
    if t.pieces.is_empty() {
        return Err(FormatError::invalid(file, "tokens", "no tokens"));
    }
    Ok(t)
}

/// Reads a `tokenizer.bin` (bounded: a real one is well under 64 MiB).
pub fn read_tokenizer(path: &Path, vocab_size: Option<usize>) -> Result<Llama2cTokenizer> {
    let len = std::fs::metadata(path)
        .map_err(|e| FormatError::io(path, e))?
        .len();
    if len > 64 << 20 {
        return Err(FormatError::invalid(
            path,
            "size",
            format!("{len} bytes is too large for a tokenizer.bin"),
        ));
    }
    let b = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    parse_tokenizer(path, &b, vocab_size)
}

/// The bytes of a `tokenizer.bin`.
pub fn tokenizer_bytes(t: &Llama2cTokenizer) -> Vec<u8> {
    let mut out = Vec::new();
    let max = t.pieces.iter().map(|p| p.len()).max().unwrap_or(0) as u32;
    out.extend_from_slice(&(max.max(t.max_token_length) as i32).to_le_bytes());
    for (s, p) in t.scores.iter().zip(&t.pieces) {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&(p.len() as i32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// A llama2.c tokenizer from a SentencePiece vocabulary (GGUF "llama" kind): ▁ becomes a
/// space and BOS/EOS get llama2.c's "\n<s>\n" / "\n</s>\n" pieces.
pub fn tokenizer_from_source(file: &Path, src: &TokenizerSource) -> Result<Llama2cTokenizer> {
    match src {
        TokenizerSource::Llama2cBin(p) => read_tokenizer(p, None),
        TokenizerSource::Gguf { model, tokens, scores, bos, eos, .. } if model == "llama" => {
            let pieces = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let i = Some(i as u32);
                    if i == *bos {
                        b"\n<s>\n".to_vec()
                    } else if i == *eos {
                        b"\n</s>\n".to_vec()
                    } else {
                        t.replace('\u{2581}', " ").into_bytes()
                    }
                })
                .collect::<Vec<_>>();
            let scores = scores.clone().unwrap_or_else(|| vec![0.0; pieces.len()]);
            if scores.len() != pieces.len() {
                return Err(FormatError::invalid(file, "tokenizer.ggml.scores", "length differs from tokens"));
            }
            Ok(Llama2cTokenizer { max_token_length: 0, scores, pieces })
        }
        other => Err(FormatError::unsupported(
            file,
            "tokenizer",
            format!("{} cannot be written as a llama2.c tokenizer.bin (SentencePiece vocabularies only)", other.kind()),
        )),
    }
}

/// Writes `tokenizer.bin`.
pub fn write_tokenizer(path: &Path, t: &Llama2cTokenizer) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| FormatError::io(path, e))?;
    f.write_all(&tokenizer_bytes(t))
        .map_err(|e| FormatError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(tied: bool) -> Params {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.tied_embeddings = tied;
        let mut p = Params::zeros(&cfg).unwrap();
        for (i, x) in p.data.iter_mut().enumerate() {
            *x = ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
        }
        p
    }

    #[test]
    fn legacy_round_trip_is_bitwise() {
        for tied in [true, false] {
            let p = tiny(tied);
            let b = model_bytes(Path::new("m.bin"), &p).unwrap();
            let (q, h) = parse_model(Path::new("m.bin"), &b).unwrap();
            assert_eq!(h.version, 0);
            assert_eq!(q.config, p.config);
            assert_eq!(q.data, p.data);
        }
    }

    #[test]
    fn version1_and_version2_read() {
        let p = tiny(false);
        let c = &p.config;
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&MAGIC_AK42.to_le_bytes());
        for v in [
            1i32,
            c.dim as i32,
            c.hidden_dim as i32,
            c.n_layers as i32,
            c.n_heads as i32,
            c.n_kv_heads as i32,
            c.vocab_size as i32,
            c.max_seq_len as i32,
        ] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        hdr.push(0); // not shared
        let order = tensor_order(&Header {
            version: 1,
            config: c.clone(),
            group_size: None,
        });
        let mut b1 = hdr.clone();
        b1.resize(V12_HEADER, 0);
        for n in &order {
            let t = p.layout.find(n).unwrap();
            to_file_rope(n, &t.shape, c, &p.data[t.range()])
                .iter()
                .for_each(|x| b1.extend_from_slice(&x.to_le_bytes()));
        }
        let (q, h) = parse_model(Path::new("v1.bin"), &b1).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(q.data, p.data);

        // Version 2: matrices in Q8_0 groups of 32.
        let mut b2 = hdr.clone();
        b2[4..8].copy_from_slice(&2i32.to_le_bytes());
        b2.extend_from_slice(&32i32.to_le_bytes());
        b2.resize(V12_HEADER, 0);
        let order = tensor_order(&Header {
            version: 2,
            config: c.clone(),
            group_size: Some(32),
        });
        for n in &order {
            let t = p.layout.find(n).unwrap();
            let d = to_file_rope(n, &t.shape, c, &p.data[t.range()]);
            if t.shape.len() == 1 {
                d.iter()
                    .for_each(|x| b2.extend_from_slice(&x.to_le_bytes()));
                continue;
            }
            let mut scales = Vec::new();
            for g in d.chunks(32) {
                let s = g.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                g.iter().for_each(|x| b2.push((x / s).round() as i8 as u8));
                scales.push(s);
            }
            scales
                .iter()
                .for_each(|s| b2.extend_from_slice(&s.to_le_bytes()));
        }
        let (q, h) = parse_model(Path::new("v2.bin"), &b2).unwrap();
        assert_eq!(h.group_size, Some(32));
        let max_err = q
            .data
            .iter()
            .zip(&p.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_err < 0.5 / 127.0 + 1e-6, "{max_err}");
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let p = tiny(true);
        let b = model_bytes(Path::new("m.bin"), &p).unwrap();
        let f = Path::new("m.bin");
        let err = |b: &[u8]| parse_model(f, b).err().unwrap().to_string();
        assert!(err(&b[..b.len() - 1]).contains("file size"));
        assert!(err(&b[..10]).contains("header"));
        let mut bad = b.clone();
        bad[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(err(&bad).contains("dim"), "{}", err(&bad));
        let mut bad = b.clone();
        bad[12..16].copy_from_slice(&0i32.to_le_bytes());
        assert!(err(&bad).contains("n_heads"));
        let mut bad = b.clone();
        bad[20..24].copy_from_slice(&(1i32 << 30).to_le_bytes());
        assert!(err(&bad).contains("vocab_size"), "{}", err(&bad));
    }

    #[test]
    fn tokenizer_round_trip_and_corruption() {
        let t = Llama2cTokenizer {
            max_token_length: 5,
            scores: vec![0.0, -1.5, 2.0],
            pieces: vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b" the".to_vec()],
        };
        let b = tokenizer_bytes(&t);
        let f = Path::new("tokenizer.bin");
        assert_eq!(parse_tokenizer(f, &b, None).unwrap(), t);
        assert_eq!(parse_tokenizer(f, &b, Some(2)).unwrap().pieces.len(), 2);
        assert!(parse_tokenizer(f, &b, Some(4))
            .unwrap_err()
            .to_string()
            .contains("token 3"));
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(parse_tokenizer(f, &bad, None)
            .unwrap_err()
            .to_string()
            .contains("token 0 length"));
        assert!(parse_tokenizer(f, &b[..2], None).is_err());
    }
}
