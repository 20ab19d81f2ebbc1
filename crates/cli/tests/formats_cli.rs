//! `neuralforge import`, `export` and `info` end to end on real files: weights survive every
//! path bitwise (f32), the tokenizer travels along, `--merge` folds an adapter in, and bad
//! input fails with a message naming the file.

use std::path::{Path, PathBuf};

mod common;
use common::{nf, shared};

fn tmp(name: &str) -> PathBuf {
    common::tmp("cli-formats", name)
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = nf(args);
    assert!(success, "neuralforge {args:?} failed: {stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn llama2c_import_export_is_bitwise_and_keeps_the_tokenizer() {
    let Some(shared) = shared() else { return };
    let src = shared.join("data/stories260K/stories260K.bin");
    let d = tmp("l2c");
    let folder = d.join("model");
    ok(&["import", s(&src), "--out", s(&folder)]);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(folder.join(f).is_file(), "{f} missing");
    }
    // Importing over an existing model needs --force.
    let (success, _, err) = nf(&["import", s(&src), "--out", s(&folder)]);
    assert!(!success && err.contains("--force"), "{err}");
    // Back to llama2.c: every weight byte equals the original file's.
    let out = d.join("back/model.bin");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    ok(&[
        "export",
        s(&folder),
        "--format",
        "llama2c",
        "--out",
        s(&out),
    ]);
    let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(a.len(), b.len());
    let weights_end = 28 + 4 * 260_032;
    assert!(
        a[..weights_end] == b[..weights_end],
        "weights differ after import/export"
    );
    // The tokenizer made the trip through tokenizer.json with identical pieces.
    let (ta, tb) = (
        std::fs::read(shared.join("data/stories260K/tok512.bin")).unwrap(),
        std::fs::read(out.with_file_name("tokenizer.bin")).unwrap(),
    );
    let pieces = |b: &[u8]| {
        let mut v = Vec::new();
        let mut p = 4;
        while p < b.len() {
            let l = i32::from_le_bytes(b[p + 4..p + 8].try_into().unwrap()) as usize;
            v.push(b[p + 8..p + 8 + l].to_vec());
            p += 8 + l;
        }
        v
    };
    assert_eq!(pieces(&ta), pieces(&tb));
    // info --json on the folder.
    let info = ok(&["info", s(&folder), "--json"]);
    assert!(info.contains(r#""key":"vocab","value":512"#), "{info}");
    assert!(
        info.contains(r#""key":"tokenizer_vocab","value":512"#),
        "{info}"
    );
}

#[test]
fn hf_to_gguf_to_hf_is_bitwise() {
    let Some(shared) = shared() else { return };
    let src = shared.join("fixtures/tiny-llama/model");
    let d = tmp("gguf");
    let g = d.join("m.gguf");
    ok(&["export", s(&src), "--format", "gguf", "--out", s(&g)]);
    let info = ok(&["info", s(&g), "--json"]);
    assert!(info.contains(r#""key":"kv_heads","value":2"#), "{info}");
    let back = d.join("back");
    ok(&["import", s(&g), "--out", s(&back)]);
    let a = formats::load_model(&src).unwrap();
    let b = formats::load_model(&back).unwrap();
    assert_eq!(a.params.config, b.params.config);
    assert!(
        a.params.data == b.params.data,
        "HF -> GGUF -> HF not bitwise"
    );
    // Q8_0 and f16 GGUF, bf16 folder: accepted; bad combinations refused.
    ok(&[
        "export",
        s(&src),
        "--format",
        "gguf",
        "--dtype",
        "q8_0",
        "--out",
        s(&g),
        "--force",
    ]);
    ok(&[
        "export",
        s(&src),
        "--format",
        "hf",
        "--dtype",
        "bf16",
        "--out",
        s(&d.join("bf16")),
    ]);
    let (success, _, err) = nf(&[
        "export",
        s(&src),
        "--format",
        "hf",
        "--dtype",
        "q8_0",
        "--out",
        s(&d.join("x")),
    ]);
    assert!(!success && err.contains("q8_0"), "{err}");
}

#[test]
fn merge_folds_the_adapter_into_the_weights() {
    let Some(shared) = shared() else { return };
    let base = shared.join("fixtures/tiny-llama/model");
    let adapter = shared.join("fixtures/tiny-llama/lora_after");
    let d = tmp("merge");
    let out = d.join("merged");
    ok(&[
        "export",
        s(&base),
        "--format",
        "hf",
        "--merge",
        s(&adapter),
        "--out",
        s(&out),
    ]);
    let b = formats::load_model(&base).unwrap();
    let m = formats::load_model(&out).unwrap();
    let a =
        formats::safetensors_io::SafetensorsFile::open(&adapter.join("adapter_model.safetensors"))
            .unwrap();
    // W' = W + (alpha / r) * B A, checked by a plain loop for one projection.
    let name = "model.layers.1.self_attn.v_proj.weight";
    let (_, la) = a
        .read_any_f32("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight")
        .unwrap();
    let (_, lb) = a
        .read_any_f32("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
        .unwrap();
    let (w0, w1) = (b.params.get(name).unwrap(), m.params.get(name).unwrap());
    let (out_f, in_f, r) = (32, 64, 4);
    let mut max_err = 0f32;
    let mut max_delta = 0f32;
    for o in 0..out_f {
        for i in 0..in_f {
            let delta: f32 = (0..r)
                .map(|k| lb[o * r + k] * la[k * in_f + i])
                .sum::<f32>()
                * 2.0;
            max_err = max_err.max((w0[o * in_f + i] + delta - w1[o * in_f + i]).abs());
            max_delta = max_delta.max(delta.abs());
        }
    }
    assert!(
        max_delta > 1e-4,
        "the adapter changes nothing ({max_delta})"
    );
    assert!(max_err < 1e-6, "merge error {max_err}");
    // Untouched tensors stay bitwise.
    assert_eq!(
        b.params.get("model.layers.1.mlp.up_proj.weight"),
        m.params.get("model.layers.1.mlp.up_proj.weight")
    );
    // An adapter for another shape is refused.
    let (success, _, err) = nf(&[
        "export",
        s(&shared.join("fixtures/tiny-llama-tied/model")),
        "--format",
        "hf",
        "--merge",
        s(&adapter),
        "--out",
        s(&d.join("bad")),
    ]);
    assert!(
        !success && err.contains("adapter_model.safetensors"),
        "{err}"
    );
}

#[test]
fn bad_input_names_the_file() {
    let Some(shared) = shared() else { return };
    let d = tmp("bad");
    let f = d.join("broken.gguf");
    std::fs::write(&f, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    for cmd in [
        vec!["info", s(&f)],
        vec!["import", s(&f), "--out", s(&d.join("o"))],
        vec!["export", s(&f), "--format", "hf", "--out", s(&d.join("o2"))],
    ] {
        let (success, _, err) = nf(&cmd);
        assert!(!success, "{cmd:?} succeeded");
        assert!(err.contains("broken.gguf"), "{cmd:?}: {err}");
    }
    let (success, out, _) = nf(&["info", s(&f), "--json"]);
    assert!(!success && out.contains(r#""type":"error""#), "{out}");
    // llama2.c export of a model llama2.c cannot express (rope theta 100000).
    let (success, _, err) = nf(&[
        "export",
        s(&shared.join("fixtures/tiny-llama-tied/model")),
        "--format",
        "llama2c",
        "--out",
        s(&d.join("m.bin")),
    ]);
    assert!(!success && err.contains("rope_theta"), "{err}");
}

#[test]
fn checkpoints_export_as_peft_and_models() {
    let Some(shared) = shared() else { return };
    let base_dir = shared.join("fixtures/tiny-llama/model");
    let base = formats::load_model(&base_dir).unwrap();
    let lora = formats::peft::load_adapter(
        &shared.join("fixtures/tiny-llama/lora_after"),
        &base.params.config,
    )
    .unwrap();
    let d = tmp("ckpt");
    fn named<'a>(
        layout: &engine::ParamLayout,
        data: &'a [f32],
    ) -> Vec<(String, Vec<usize>, &'a [f32])> {
        layout
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), &data[t.range()]))
            .collect()
    }
    // The trainer's state shape: `model` (ModelConfig) and `config` (its settings).
    let state = |rank: usize| {
        serde_json::json!({
            "model": base.params.config,
            "config": {"model": base_dir, "lora_rank": rank, "lora_alpha": 8.0, "lora_targets": "q,k,v,o", "lora_dropout": 0.0},
        })
    };
    let lora_ckpt = formats::checkpoint::save(
        &d.join("lora-run"),
        7,
        &[formats::checkpoint::TensorFile {
            stem: "weights",
            tensors: named(&lora.layout, &lora.data),
        }],
        &state(4),
        &|_| Ok(()),
    )
    .unwrap();
    let info = ok(&["info", s(&lora_ckpt), "--json"]);
    assert!(
        info.contains(r#""key":"trains","value":"lora adapter""#)
            && info.contains(r#""key":"step","value":7"#),
        "{info}"
    );
    let peft_out = d.join("adapter");
    ok(&[
        "export",
        s(&lora_ckpt),
        "--format",
        "peft",
        "--out",
        s(&peft_out),
    ]);
    let back = formats::peft::load_adapter(&peft_out, &base.params.config).unwrap();
    assert!(back.data == lora.data);
    // The checkpoint also works as a --merge argument.
    ok(&[
        "export",
        s(&base_dir),
        "--format",
        "gguf",
        "--merge",
        s(&lora_ckpt),
        "--out",
        s(&d.join("merged.gguf")),
    ]);
    // A full-model checkpoint exports with the base model's tokenizer settings.
    let full = formats::checkpoint::save(
        &d.join("full-run"),
        3,
        &[formats::checkpoint::TensorFile {
            stem: "weights",
            tensors: named(&base.params.layout, &base.params.data),
        }],
        &state(0),
        &|_| Ok(()),
    )
    .unwrap();
    let out = d.join("full");
    ok(&["export", s(&full), "--format", "hf", "--out", s(&out)]);
    let m = formats::load_model(&out).unwrap();
    assert!(m.params.data == base.params.data);
    assert_eq!(m.eos_token_ids, vec![2]);
    let (success, _, err) = nf(&[
        "export",
        s(&full),
        "--format",
        "peft",
        "--out",
        s(&d.join("x")),
    ]);
    assert!(!success && err.contains("full-model checkpoint"), "{err}");
}
