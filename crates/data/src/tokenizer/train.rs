//! Training a byte-level BPE tokenizer (GPT-2 / SmolLM style) for models trained from scratch,
//! with ChatML special tokens and chat template.

use super::{SpecialConfig, Tokenizer};
use crate::error::{DataError, Result};
use std::path::PathBuf;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Special tokens of trained tokenizers: pad/unknown, BOS (start of turn), EOS (end of turn).
pub const TRAINED_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The ChatML template trained tokenizers carry (the one SmolLM2 uses).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub vocab_size: usize,
    pub min_frequency: u64,
    pub files: Vec<PathBuf>,
    pub show_progress: bool,
}

/// Trains byte-level BPE over the files (read line by line). Ids 0, 1, 2 are
/// `<|endoftext|>` (pad), `<|im_start|>` (BOS), `<|im_end|>` (EOS).
pub fn train_byte_level_bpe(opts: &TrainOptions) -> Result<Tokenizer> {
    let min_vocab = 256 + TRAINED_SPECIALS.len();
    if opts.vocab_size < min_vocab || opts.vocab_size > (1 << 24) {
        return Err(DataError::Invalid(format!(
            "--vocab-size {} must be between {min_vocab} (bytes + special tokens) and {}",
            opts.vocab_size,
            1 << 24
        )));
    }
    if opts.files.is_empty() {
        return Err(DataError::Invalid("no training files given".into()));
    }
    let mut files = Vec::with_capacity(opts.files.len());
    for f in &opts.files {
        if !f.is_file() {
            return Err(DataError::format(f, "not a readable file"));
        }
        files.push(f.to_string_lossy().into_owned());
    }
    let specials: Vec<AddedToken> = TRAINED_SPECIALS
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    let mut trainer = BpeTrainer::builder()
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .show_progress(opts.show_progress)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_post_processor(Some(ByteLevel::new(true, false, true)))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    tok.train_from_files(&mut trainer, files)
        .map_err(|e| DataError::Tokenizer(format!("training failed: {e}")))?;
    let json = tok
        .to_string(false)
        .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes())
        .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let cfg = SpecialConfig {
        pad: tok.token_to_id(TRAINED_SPECIALS[0]),
        unk: None,
        bos: tok.token_to_id(TRAINED_SPECIALS[1]),
        eos: tok.token_to_id(TRAINED_SPECIALS[2]),
        add_bos: Some(false),
        add_eos: Some(false),
        chat_template: Some(CHATML_TEMPLATE.to_string()),
    };
    Ok(Tokenizer::from_hf(tok, cfg))
}
