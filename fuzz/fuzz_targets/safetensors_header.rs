//! safetensors header parsing and tensor conversion.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = formats::safetensors_io::SafetensorsFile::from_bytes(
        Path::new("fuzz.safetensors"),
        data.to_vec(),
    ) else {
        return;
    };
    let _ = f.metadata();
    if let Ok(entries) = f.entries() {
        for (name, _, shape) in entries {
            let _ = f.check_shape(&name, &shape);
            let _ = f.read_any_f32(&name);
        }
    }
});
