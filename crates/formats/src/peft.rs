//! PEFT adapters (adapter_config.json + adapter_model.safetensors).
