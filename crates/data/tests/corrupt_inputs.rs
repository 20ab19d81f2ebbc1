//! Randomly corrupted tokenizer files (llama2.c tokenizer.bin, GGUF vocabulary metadata) must
//! give errors, never panics or huge allocations.

mod common;

use data::Tokenizer;

/// xorshift64*: deterministic corruption without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut b = original.to_vec();
    match rng.below(4) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
        }
        2 => {
            // Overwrite a 4- or 8-byte field with an extreme value.
            let i = rng.below(b.len().saturating_sub(8));
            let v: [u8; 8] = if rng.below(2) == 0 {
                [0xff; 8]
            } else {
                (rng.next() | 1 << 62).to_le_bytes()
            };
            b[i..i + 8].copy_from_slice(&v);
        }
        _ => {
            let i = rng.below(b.len());
            let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, extra);
        }
    }
    b
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A small GGUF holding only a "llama" vocabulary taken from tok512.
fn small_gguf(tok: &Tokenizer) -> Vec<u8> {
    let m = tok.spm_model().unwrap();
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(6u64.to_le_bytes());
    gguf_string(&mut b, "tokenizer.ggml.model");
    b.extend(8u32.to_le_bytes());
    gguf_string(&mut b, "llama");
    gguf_string(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((m.pieces().len() as u64).to_le_bytes());
    for p in m.pieces() {
        gguf_string(&mut b, p);
    }
    gguf_string(&mut b, "tokenizer.ggml.scores");
    b.extend(9u32.to_le_bytes());
    b.extend(6u32.to_le_bytes());
    b.extend((m.scores().len() as u64).to_le_bytes());
    for s in m.scores() {
        b.extend(s.to_le_bytes());
    }
    gguf_string(&mut b, "tokenizer.ggml.token_type");
    b.extend(9u32.to_le_bytes());
    b.extend(5u32.to_le_bytes());
    b.extend((m.kinds().len() as u64).to_le_bytes());
    for k in m.kinds() {
        let code: i32 = match k {
            data::tokenizer::spm::PieceKind::Unknown => 2,
            data::tokenizer::spm::PieceKind::Control => 3,
            data::tokenizer::spm::PieceKind::Byte => 6,
            _ => 1,
        };
        b.extend(code.to_le_bytes());
    }
    for (key, v) in [
        ("tokenizer.ggml.bos_token_id", 1u32),
        ("tokenizer.ggml.eos_token_id", 2),
    ] {
        gguf_string(&mut b, key);
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    b
}

#[test]
fn corrupted_tokenizer_files_error_without_panicking() {
    let Some(shared) = common::shared() else {
        return;
    };
    let bin_path = shared.join("data/stories260K/tok512.bin");
    let bin = std::fs::read(&bin_path).unwrap();
    let tok = Tokenizer::from_path(&bin_path).unwrap();
    let gguf = small_gguf(&tok);
    let dir = common::temp_dir("corrupt");
    let gguf_path = dir.join("v.gguf");
    std::fs::write(&gguf_path, &gguf).unwrap();
    let from_gguf = Tokenizer::from_path(&gguf_path).unwrap();
    assert_eq!(
        from_gguf.encode("Once upon a time", true).unwrap(),
        tok.encode("Once upon a time", true).unwrap()
    );

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    for i in 0..400 {
        let b = mutate(&mut rng, &bin);
        if let Ok(t) = Tokenizer::from_llama2c_bytes(&bin_path, &b) {
            let _ = t.encode("Once upon a time 🦙", true);
        } else {
            errors += 1;
        }
        let g = mutate(&mut rng, &gguf);
        let p = dir.join(format!("m{}.gguf", i % 4));
        std::fs::write(&p, &g).unwrap();
        match Tokenizer::from_path(&p) {
            Ok(t) => {
                let ids = t.encode("Once upon a time 🦙", true).unwrap();
                let _ = t.decode(&ids);
            }
            Err(e) => {
                errors += 1;
                assert!(e.to_string().contains(".gguf"), "{e}");
            }
        }
    }
    assert!(errors > 100, "only {errors} corruptions were detected");
}
