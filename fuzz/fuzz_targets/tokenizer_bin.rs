//! llama2.c tokenizer.bin.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("tokenizer.bin");
    let _ = formats::llama2c::parse_tokenizer(path, data, None);
    let _ = formats::llama2c::parse_tokenizer(path, data, Some(512));
});
