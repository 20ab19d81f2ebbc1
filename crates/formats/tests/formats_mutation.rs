//! Stable-Rust stand-in for the cargo-fuzz targets (fuzz/): real files mutated at random
//! (seeded, so failures reproduce) through every reader. Nothing may panic; every error
//! must name the file.

mod common;
use common::*;
use formats::gguf::{self, GgmlType, WriteOptions};
use formats::llama2c;
use formats::safetensors_io::SafetensorsFile;
use std::path::Path;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation: byte flips, an integer field set to an edge value, a cut, or an
/// inserted/removed run. `hot` bytes at the front (the header) are hit most of the time.
fn mutate(rng: &mut Rng, src: &[u8], hot: usize) -> Vec<u8> {
    let mut b = src.to_vec();
    let pos = |rng: &mut Rng, len: usize| {
        if rng.below(4) > 0 {
            rng.below(hot.min(len))
        } else {
            rng.below(len)
        }
    };
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        match rng.below(6) {
            0 => {
                let p = pos(rng, b.len());
                b[p] ^= 1 << rng.below(8);
            }
            1 | 2 => {
                let edges: [u64; 9] = [
                    0,
                    1,
                    0x7f,
                    0xff,
                    0xffff,
                    0x7fff_ffff,
                    0xffff_ffff,
                    1 << 40,
                    u64::MAX,
                ];
                let v = edges[rng.below(edges.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let p = pos(rng, b.len());
                let end = (p + w).min(b.len());
                b[p..end].copy_from_slice(&v[..end - p]);
            }
            3 => {
                let cut = rng.below(b.len());
                b.truncate(cut);
            }
            4 => {
                let p = pos(rng, b.len());
                let n = 1 + rng.below(16);
                b.splice(p..p, std::iter::repeat_n(rng.next() as u8, n));
            }
            _ => {
                let p = pos(rng, b.len());
                let end = (p + 1 + rng.below(16)).min(b.len());
                b.drain(p..end);
            }
        }
    }
    b
}

fn check(name: &str, r: Result<(), formats::FormatError>) {
    if let Err(e) = r {
        assert!(
            e.to_string().contains(name),
            "error does not name {name}: {e}"
        );
    }
}

#[test]
fn random_mutations_never_panic() {
    let Some(shared) = shared() else { return };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let rounds: usize = std::env::var("NF_MUTATION_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);

    // GGUF: a small Q8_0 file with a vocabulary, written from a real fixture.
    let m = formats::load_model(&shared.join("fixtures/tiny-llama-tied/model")).unwrap();
    let tok = formats::TokenizerSource::Gguf {
        model: "gpt2".into(),
        pre: Some("default".into()),
        tokens: (0..512).map(|i| format!("t{i}")).collect(),
        scores: None,
        token_types: Some(vec![1; 512]),
        merges: Some(vec!["t 1".into(); 8]),
        bos: Some(1),
        eos: Some(2),
        unk: None,
        pad: None,
        add_bos: Some(false),
        add_eos: None,
    };
    let p = tmp("mutation").join("m.gguf");
    gguf::write(
        &p,
        &m.params,
        &WriteOptions {
            dtype: GgmlType::Q8_0,
            tokenizer: Some(&tok),
            chat_template: Some("{{ messages }}"),
            name: None,
        },
    )
    .unwrap();
    let gguf_bytes = std::fs::read(&p).unwrap();
    let header = gguf_bytes.len().min(16 << 10);
    for _ in 0..rounds {
        let b = mutate(&mut rng, &gguf_bytes, header);
        check(
            "fuzz.gguf",
            gguf::parse_model(Path::new("fuzz.gguf"), &b).map(|_| ()),
        );
    }

    // safetensors: the fixture's model file.
    let st = std::fs::read(shared.join("fixtures/tiny-llama/model/model.safetensors")).unwrap();
    let hdr = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    for _ in 0..rounds {
        let b = mutate(&mut rng, &st, hdr);
        let r = SafetensorsFile::from_bytes(Path::new("fuzz.safetensors"), b).and_then(|f| {
            for (name, _, _) in f.entries()? {
                f.read_any_f32(&name)?;
            }
            Ok(())
        });
        check("fuzz.safetensors", r);
    }

    // llama2.c model and tokenizer.bin.
    let model = std::fs::read(shared.join("data/stories260K/stories260K.bin")).unwrap();
    for _ in 0..rounds {
        let b = mutate(&mut rng, &model, 28);
        check(
            "fuzz.bin",
            llama2c::parse_model(Path::new("fuzz.bin"), &b).map(|_| ()),
        );
    }
    let tokb = std::fs::read(shared.join("data/stories260K/tok512.bin")).unwrap();
    for _ in 0..rounds {
        let b = mutate(&mut rng, &tokb, tokb.len());
        check(
            "tokenizer.bin",
            llama2c::parse_tokenizer(Path::new("tokenizer.bin"), &b, None).map(|_| ()),
        );
        check(
            "tokenizer.bin",
            llama2c::parse_tokenizer(Path::new("tokenizer.bin"), &b, Some(512)).map(|_| ()),
        );
    }
}
