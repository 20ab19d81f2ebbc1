//! `neuralforge generate` end to end: the NDJSON stream, greedy text equal to the references,
//! tokenization of the reference prompts, seeded sampling, stop strings, multi-byte characters.

use std::process::Command;

mod common;
use common::shared;

/// Runs `generate --json` and returns (token ids, token texts, generate_done event).
fn generate_json(args: &[&str]) -> (Vec<u32>, Vec<String>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .arg("generate")
        .arg("--json")
        .args(args)
        .output()
        .expect("run neuralforge");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    assert!(
        out.status.success(),
        "generate failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut ids, mut texts, mut done) = (Vec::new(), Vec::new(), None);
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
        match v["type"].as_str() {
            Some("token") => {
                ids.push(v["token_id"].as_u64().expect("token_id") as u32);
                texts.push(v["text"].as_str().expect("text").to_string());
            }
            Some("generate_done") => done = Some(v),
            Some(_) => {}
            None => panic!("event without type: {line}"),
        }
    }
    (ids, texts, done.expect("a generate_done event"))
}

fn smollm2(shared: &std::path::Path) -> String {
    shared
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        .display()
        .to_string()
}

#[test]
fn stories260k_greedy_text_equals_llama2c() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("data/stories260K");
    let model = dir.join("stories260K.bin").display().to_string();
    let (ids, texts, done) =
        generate_json(&["--model", &model, "--temp", "0", "--max-tokens", "200"]);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected_greedy_t0_n200_ids.json")).expect("ids"),
    )
    .expect("JSON");
    let want: Vec<u32> = expected["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .skip(1) // BOS
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    assert_eq!(ids, want);
    let want_text =
        std::fs::read_to_string(dir.join("expected_greedy_t0_n200.txt")).expect("expected text");
    assert_eq!(texts.concat(), want_text);
    assert_eq!(done["tokens"], 200);
    assert!(done["total_ms"].as_f64().expect("total_ms") > 0.0);
}

#[test]
fn smollm2_prompt_ids_and_greedy_continuation_equal_transformers() {
    let Some(shared) = shared() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("fixtures/smollm2/reference.json")).expect("ref"),
    )
    .expect("JSON");
    let gguf = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = formats::load_model(&gguf).expect("load");
    let tok = data::Tokenizer::from_path(&gguf).expect("tokenizer");
    let p = &reference["prompts"][0];
    let prompt = p["prompt"].as_str().expect("prompt");
    let want_prompt: Vec<u32> = p["token_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    assert_eq!(
        tok.encode(prompt, model.add_bos).expect("encode"),
        want_prompt
    );
    let want: Vec<u32> = p["greedy_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    // The reference runs 32 steps without stopping; we stop at EOS (<|im_end|>), so we
    // compare up to it.
    let eos = want.iter().position(|&t| model.eos_token_ids.contains(&t));
    let upto = eos.unwrap_or(want.len());
    let model_path = smollm2(&shared);
    // The quantized path (the default for this Q4_1 file, 16-bit activations) and the f32
    // path (`--dequantize`) both reproduce transformers' greedy ids exactly.
    for extra in [None, Some("--dequantize")] {
        let mut args = vec![
            "--model",
            &model_path,
            "--prompt",
            prompt,
            "--temp",
            "0",
            "--max-tokens",
            "32",
        ];
        args.extend(extra);
        let (ids, texts, _) = generate_json(&args);
        assert_eq!(ids, want[..upto], "{extra:?}");
        assert_eq!(texts.concat(), tok.decode(&want[..upto]));
    }
    // With 8-bit activations (llama.cpp's scheme) a near-tie sends it elsewhere after the
    // first tokens (tolerances in generate_quantized.rs): at least the first 5 agree.
    let (ids, _, _) = generate_json(&[
        "--model",
        &model_path,
        "--prompt",
        prompt,
        "--temp",
        "0",
        "--max-tokens",
        "32",
        "--act-bits",
        "8",
    ]);
    assert_eq!(ids[..5], want[..5]);
    for p in reference["prompts"].as_array().expect("prompts") {
        let ids: Vec<u32> = p["token_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let text = p["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(text, model.add_bos).expect("encode"),
            ids,
            "{text}"
        );
    }
}

#[test]
fn multibyte_characters_split_across_tokens_arrive_whole() {
    let Some(shared) = shared() else { return };
    let gguf = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tok = data::Tokenizer::from_path(&gguf).expect("tokenizer");
    // SmolLM2 continues this with 🎉, which its byte-level vocabulary spells in 3 tokens.
    let (ids, texts, _) = generate_json(&[
        "--model",
        &smollm2(&shared),
        "--prompt",
        "Emoji party: 🎉🎉",
        "--temp",
        "0",
        "--max-tokens",
        "9",
    ]);
    let joined = texts.concat();
    assert_eq!(joined, tok.decode(&ids));
    assert!(joined.contains('🎉'), "{joined:?}");
    assert!(
        texts.iter().any(|t| t.is_empty()),
        "some token carried only part of a character"
    );
    assert!(!joined.contains('\u{FFFD}'));
}

#[test]
fn seeded_sampling_repeats_and_stop_strings_cut() {
    let Some(shared) = shared() else { return };
    let model = shared
        .join("data/stories260K/stories260K.bin")
        .display()
        .to_string();
    // The same sampling settings for every run; `extra` adds the seed and maybe a stop string.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--model",
            &model,
            "--temp",
            "1.0",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--min-p",
            "0.02",
            "--repeat-penalty",
            "1.1",
            "--max-tokens",
            "60",
        ];
        args.extend_from_slice(extra);
        generate_json(&args)
    };
    let (a, ta, _) = run(&["--seed", "11"]);
    let (b, _, _) = run(&["--seed", "11"]);
    let (c, _, _) = run(&["--seed", "12"]);
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "another seed, other tokens");
    // Stop at the first occurrence of a word the seeded run produced.
    let text = ta.concat();
    let word = text
        .split_whitespace()
        .nth(3)
        .expect("a few words")
        .to_string();
    let at = text.find(&word).expect("word in text");
    let (_, ts, done) = run(&["--seed", "11", "--stop", &word]);
    assert_eq!(ts.concat(), text[..at]);
    assert!(done["tokens"].as_u64().expect("tokens") < 60);
}

#[test]
fn chat_mode_applies_the_template() {
    let Some(shared) = shared() else { return };
    let (ids, texts, _) = generate_json(&[
        "--model",
        &smollm2(&shared),
        "--chat",
        "--system",
        "You are a helpful assistant.",
        "--prompt",
        "What is the capital of France?",
        "--temp",
        "0",
        "--max-tokens",
        "20",
    ]);
    assert!(!ids.is_empty());
    assert!(texts.concat().contains("Paris"), "{:?}", texts.concat());
}

#[test]
fn bad_flags_are_clear_errors() {
    let Some(shared) = shared() else { return };
    let model = shared
        .join("data/stories260K/stories260K.bin")
        .display()
        .to_string();
    for (args, needle) in [
        (
            vec!["--model", "/nonexistent/model.gguf"],
            "/nonexistent/model.gguf",
        ),
        (vec!["--model", &model, "--top-p", "0"], "top_p"),
        (vec!["--model", &model, "--temp=-1"], "temperature"),
        (vec!["--model", &model, "--ctx", "100000"], "--ctx"),
        (vec!["--model", &model, "--logprobs", "21"], "--logprobs"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
            .arg("generate")
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `--logprobs N`: each token event carries the log-softmax of the raw logits it was drawn
/// from (not of the temperature-scaled ones), and the N most likely tokens in order.
#[test]
fn logprobs_report_the_models_own_distribution() {
    let Some(shared) = shared() else { return };
    let path = shared.join("data/stories260K/stories260K.bin");
    let model_arg = path.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args([
            "generate",
            "--json",
            "--model",
            &model_arg,
            "--prompt",
            "Once upon",
        ])
        .args([
            "--temp",
            "1.5",
            "--seed",
            "7",
            "--max-tokens",
            "10",
            "--logprobs",
            "4",
        ])
        .output()
        .expect("run neuralforge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .filter(|v: &serde_json::Value| v["type"] == "token")
        .collect();
    assert_eq!(events.len(), 10);

    let model = formats::load_model(&path).expect("load");
    let tok =
        data::Tokenizer::from_path(&shared.join("data/stories260K/tok512.bin")).expect("tokenizer");
    let prompt = tok.encode("Once upon", true).expect("encode");
    let mut session = engine::infer::InferenceSession::new(&model.params, 64).expect("session");
    let mut logits = session.prefill(&prompt).expect("prefill").to_vec();
    let mut sampled_below_top = false;
    for e in &events {
        let id = e["token_id"].as_u64().expect("token_id") as u32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_z = max
            + logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let want = |t: u32| logits[t as usize] as f64 - log_z;
        let got = e["logprob"].as_f64().expect("logprob");
        assert!((got - want(id)).abs() < 1e-9, "{got} vs {}", want(id));
        let top = e["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 4);
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        for (t, &want_id) in top.iter().zip(&order) {
            assert_eq!(t["token_id"].as_u64(), Some(want_id as u64));
            assert!((t["logprob"].as_f64().expect("logprob") - want(want_id)).abs() < 1e-9);
            assert_eq!(t["text"].as_str(), Some(tok.decode(&[want_id]).as_str()));
        }
        sampled_below_top |= id != order[0];
        logits = session.decode(id).expect("decode").to_vec();
    }
    assert!(
        sampled_below_top,
        "at temperature 1.5 some token should not be the argmax"
    );
}

/// `--adapter` merges a PEFT adapter: the CLI's greedy tokens equal those of the engine run on
/// base + merged adapter, and differ from the base model's.
#[test]
fn adapter_is_merged_before_generating() {
    let Some(shared) = shared() else { return };
    let fixture = shared.join("fixtures/tiny-llama");
    let model_dir = fixture.join("model");
    let adapter = fixture.join("lora_after");
    // The fixture has no tokenizer; stories260K's 512-token vocabulary fits its 512 ids.
    let tokenizer = shared.join("data/stories260K/tok512.bin");
    let (m, a, t) = (
        model_dir.display().to_string(),
        adapter.display().to_string(),
        tokenizer.display().to_string(),
    );
    let common = [
        "--tokenizer",
        &t,
        "--prompt",
        "Once upon a time",
        "--temp",
        "0",
        "--max-tokens",
        "12",
    ];
    let mut with: Vec<&str> = vec!["--model", &m, "--adapter", &a];
    with.extend(common);
    let mut without: Vec<&str> = vec!["--model", &m];
    without.extend(common);
    let (ids_adapter, _, _) = generate_json(&with);
    let (ids_base, _, _) = generate_json(&without);

    let mut model = formats::load_model(&model_dir).expect("load");
    let lora = formats::peft::load_adapter(&adapter, &model.params.config).expect("adapter");
    lora.merge_into(&mut model.params).expect("merge");
    let tok = data::Tokenizer::from_path(&tokenizer).expect("tokenizer");
    let prompt = tok.encode("Once upon a time", true).expect("encode");
    let mut s = engine::infer::InferenceSession::new(&model.params, 64).expect("session");
    let mut sampler =
        engine::infer::Sampler::new(engine::infer::SamplerConfig::greedy()).expect("sampler");
    let opts = engine::infer::GenerateOptions {
        max_tokens: 12,
        eos_ids: model
            .eos_token_ids
            .iter()
            .copied()
            .chain(tok.eos_id())
            .collect(),
    };
    let (want, _) = engine::infer::generate(&mut s, &mut sampler, &prompt, &opts, |_, _| {
        std::ops::ControlFlow::Continue(())
    })
    .expect("generate");
    assert_eq!(ids_adapter, want);
    assert_ne!(ids_adapter, ids_base, "the adapter changes nothing?");
}
