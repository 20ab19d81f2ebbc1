//! llama2.c model files (versions 0, 1, 2).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.bin");
    let _ = formats::llama2c::inspect(path, data);
    let _ = formats::llama2c::parse_model(path, data);
});
