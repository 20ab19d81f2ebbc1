//! The model a run trains: loaded from a file or freshly initialised from a preset, its
//! tokenizer, and how to save it at the end (Hugging Face folder options).

use super::config::TrainConfig;
use crate::output::Coded;
use anyhow::Context;
use data::Tokenizer;
use engine::quant::QuantModel;
use engine::{ModelConfig, Params};
use formats::hf::{SaveOptions, TokenizerJson};
use formats::safetensors_io::DType;
use formats::TokenizerSource;

/// Exit status of an unusable model or tokenizer.
pub const EXIT_MODEL: i32 = 3;

pub struct ModelSetup {
    /// The model's f32 weights; for a quantized base (`quant`) only its config and layout
    /// (`data` empty).
    pub params: Params,
    /// A LoRA run's frozen base held in its file's block format (`--base-dtype keep`) or as
    /// BF16 (`--base-dtype bf16`).
    pub quant: Option<QuantModel>,
    pub tokenizer: Option<Tokenizer>,
    pub save: SaveOptions,
    /// "stories260k preset, seeded init (seed 1337)" or "gguf v3 Q4_1 from x.gguf".
    pub description: String,
}

fn model_err(msg: String) -> anyhow::Error {
    Coded::new("model", EXIT_MODEL, msg).into()
}

fn load_tokenizer(path: &std::path::Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_path(path).map_err(|e| model_err(format!("tokenizer {}: {e}", path.display())))
}

/// Loads or initialises the model of `cfg` and its tokenizer, and checks they fit together.
pub fn setup(cfg: &TrainConfig) -> anyhow::Result<ModelSetup> {
    let mut setup = if let Some(preset) = &cfg.init {
        let shape = ModelConfig::preset(preset)
            .ok_or_else(|| model_err(format!("unknown preset {preset:?}")))?;
        let params = engine::init::init_params(&shape, cfg.seed)
            .with_context(|| format!("initialising the {preset} preset"))?;
        ModelSetup {
            params,
            quant: None,
            tokenizer: None,
            save: SaveOptions::default(),
            description: format!("{preset} preset, seeded init (seed {})", cfg.seed),
        }
    } else {
        let path = cfg
            .model
            .as_ref()
            .ok_or_else(|| model_err("no --model or --init".into()))?;
        if !path.exists() {
            return Err(model_err(format!(
                "model {} does not exist",
                path.display()
            )));
        }
        let (resolved, _) = crate::inputs::resolve_model(path, "--model")?;
        let path = &resolved;
        let (loaded, quant) = load_base(cfg, path)?;
        let tokenizer = match &loaded.tokenizer {
            Some(src) if cfg.tokenizer.is_none() => {
                // The GGUF vocabulary is read from the model file itself.
                let from = match src {
                    TokenizerSource::HfJson(p) | TokenizerSource::Llama2cBin(p) => p.clone(),
                    TokenizerSource::Gguf { .. } => path.clone(),
                };
                Some(Tokenizer::from_path(&from).map_err(|e| {
                    model_err(format!("tokenizer of model {}: {e}", path.display()))
                })?)
            }
            _ => None,
        };
        ModelSetup {
            save: SaveOptions::from_loaded(&loaded, DType::F32),
            description: format!("{} from {}", loaded.source, path.display()),
            params: loaded.params,
            quant,
            tokenizer,
        }
    };
    if let Some(p) = &cfg.tokenizer {
        let tok = load_tokenizer(p)?;
        // A tokenizer given explicitly is saved with the model as tokenizer.json.
        match tok.to_tokenizer_json() {
            Ok(json) => setup.save.tokenizer_json = TokenizerJson::Text(json),
            Err(_) => setup.save.tokenizer_json = TokenizerJson::None,
        }
        setup.save.bos_token_id = tok.bos_id();
        setup.save.eos_token_ids = tok.eos_id().into_iter().collect();
        // The special tokens by name too, so the saved tokenizer_config.json knows them.
        setup.save.bos_token = tok.bos_id().and_then(|id| tok.id_to_piece(id));
        setup.save.eos_token = tok.eos_id().and_then(|id| tok.id_to_piece(id));
        setup.save.add_bos = Some(tok.add_bos());
        // Its chat template too, so the trained model chats as the tokenizer was made to.
        if let Some(t) = tok.chat_template() {
            setup.save.chat_template = Some(t.to_string());
        }
        setup.tokenizer = Some(tok);
    } else if cfg.init.is_some() {
        setup.save.tokenizer_json = TokenizerJson::None;
    }
    let shape = &setup.params.config;
    if let Some(tok) = &setup.tokenizer {
        if tok.vocab_size() > shape.vocab_size {
            return Err(model_err(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tok.vocab_size(),
                shape.vocab_size
            )));
        }
        if matches!(setup.save.tokenizer_json, TokenizerJson::None) {
            if let Ok(json) = tok.to_tokenizer_json() {
                setup.save.tokenizer_json = TokenizerJson::Text(json);
                setup.save.bos_token_id = setup.save.bos_token_id.or(tok.bos_id());
                if setup.save.eos_token_ids.is_empty() {
                    setup.save.eos_token_ids = tok.eos_id().into_iter().collect();
                }
            }
        }
    }
    if cfg.seq_len > shape.max_seq_len {
        return Err(Coded::new(
            "invalid_argument",
            super::config::EXIT_USAGE,
            format!(
                "--seq-len is {}, must be at most the model's context length {}",
                cfg.seq_len, shape.max_seq_len
            ),
        )
        .into());
    }
    Ok(setup)
}

/// Loads the model file: f32 weights, or for a LoRA run on a quantized GGUF file (unless
/// `--base-dtype f32`) the frozen base in its block format (keep) or as BF16.
fn load_base(
    cfg: &TrainConfig,
    path: &std::path::Path,
) -> anyhow::Result<(formats::LoadedModel, Option<QuantModel>)> {
    let cannot =
        |e: formats::FormatError| model_err(format!("cannot load model {}: {e}", path.display()));
    let quantized_base = cfg.lora_rank > 0
        && cfg.base_dtype != "f32"
        && formats::gguf::quant_load::is_quantized_gguf(path);
    if !quantized_base {
        let mut loaded = formats::load_model(path).map_err(cannot)?;
        if cfg.lora_rank > 0 && cfg.base_dtype == "bf16" {
            // An f32 file held as BF16 (half the memory); the f32 values are dropped.
            let q = QuantModel::from_params(&loaded.params, |_, _, _, _| None)
                .map_err(|e| model_err(format!("model {}: {e}", path.display())))?;
            let bf16 = engine::frozen::to_bf16(&q);
            loaded.params.data = Vec::new();
            loaded.source = format!("{} held as BF16", loaded.source);
            return Ok((loaded, Some(bf16)));
        }
        return Ok((loaded, None));
    }
    let q = formats::gguf::load_quant_model(path).map_err(cannot)?;
    let mut meta = q.meta;
    let model = if cfg.base_dtype == "bf16" {
        meta.source = format!("{} held as BF16", meta.source);
        engine::frozen::to_bf16(&q.model)
    } else {
        q.model
    };
    Ok((meta, Some(model)))
}

/// Adapter between the data loader and our tokenizer.
pub struct TokEncode<'a>(pub &'a Tokenizer);

impl super::data_source::Encode for TokEncode<'_> {
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        self.0.encode(text, false).map_err(anyhow::Error::from)
    }
    fn bos(&self) -> Option<u32> {
        self.0.bos_id()
    }
    fn eos(&self) -> Option<u32> {
        self.0.eos_id()
    }
}
