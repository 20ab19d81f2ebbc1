//! GGUF reader: header, metadata, tensor infos, dequantization, model assembly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.gguf");
    if let Ok(h) = formats::gguf::parse_header(path, data) {
        let _ = formats::gguf::model_config(&h);
        let _ = formats::gguf::tokenizer(&h);
    }
    let _ = formats::gguf::parse_model(path, data);
});
