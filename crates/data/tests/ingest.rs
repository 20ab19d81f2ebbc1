//! Ingest: mixed folders, warnings with line numbers, --strict, incremental runs, masks.

mod common;

use data::chat::{ChatMessage, ChatTemplate};
use data::ingest::{ingest, FileEvent, IngestOptions};
use data::{Dataset, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn tok512() -> Option<Tokenizer> {
    let shared = common::shared()?;
    Some(Tokenizer::from_path(&shared.join("data/stories260K/tok512.bin")).unwrap())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn mixed_folder(dir: &Path) {
    write(dir, "a.txt", b"Once upon a time there was a cat.\n");
    write(dir, "notes.md", b"# Title\n\nSome *markdown* text.\n");
    write(
        dir,
        "src/main.rs",
        b"fn main() {\n    println!(\"hi\");\n}\n",
    );
    write(
        dir,
        "page.html",
        b"<html><body><h1>Head</h1><p>Para &amp; more</p><script>var x;</script></body></html>",
    );
    write(
        dir,
        "text.jsonl",
        b"{\"text\":\"first doc\"}\n{\"text\":\"second doc\"}\n",
    );
    write(dir, "pc.jsonl", b"{\"prompt\":\"Q1?\",\"completion\":\"A1.\"}\n{\"prompt\":\"Q2?\",\"completion\":\"A2.\"}\n");
    write(dir, "chat.jsonl", b"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n{\"messages\":[{\"role\":\"user\",\"content\":\"bye\"},{\"role\":\"assistant\",\"content\":\"see you\"}]}\n");
    write(dir, "alpaca.jsonl", b"{\"instruction\":\"Add\",\"input\":\"1 and 2\",\"output\":\"3\"}\n{\"instruction\":\"Say hi\",\"input\":\"\",\"output\":\"hi\"}\n");
    write(
        dir,
        "bad.jsonl",
        b"{\"text\":\"ok one\"}\n{\"text\": broken\n{\"text\":\"ok two\"}\n",
    );
    write(dir, "latin1.txt", b"line one\nline two\ncaf\xe9 au lait\n");
    write(dir, "image.png", b"\x89PNG\r\n\x1a\n\0\0\0rest");
    write(dir, "blob.dat", b"abc\0def");
    write(dir, "empty.txt", b"");
    write(dir, "doc.pdf", b"%PDF-1.4 ...");
    write(dir, ".hidden.txt", b"secret");
    write(dir, ".git/config", b"[core]");
    write(dir, ".git/HEAD", b"ref");
}

fn opts(src: &Path, out: &Path) -> IngestOptions {
    let mut o = IngestOptions::new(vec![src.to_path_buf()], out.to_path_buf());
    o.tokenizer_source = "tok512.bin".into();
    o
}

#[test]
fn mixed_folder_counts_and_warnings() {
    let Some(tok) = tok512() else { return };
    let root = common::temp_dir("mixed");
    let src = root.join("src");
    mixed_folder(&src);
    let out = root.join("out");
    let events = Mutex::new(Vec::<FileEvent>::new());
    let r = ingest(&tok, &opts(&src, &out), &|e| {
        events.lock().unwrap().push(e.clone())
    })
    .unwrap();
    assert_eq!(r.files.len(), 10, "{:?}", r.files);
    assert_eq!(r.new_files, 10);
    assert_eq!(events.lock().unwrap().len(), 10);
    assert_eq!(r.skipped.binary, 2);
    assert_eq!(r.skipped.empty, 1);
    assert_eq!(r.skipped.unsupported, 1);
    assert_eq!(r.skipped.hidden, 3);
    assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    let has = |needle: &str| r.warnings.iter().any(|w| w.contains(needle));
    assert!(has("bad.jsonl:2: invalid JSON"), "{:?}", r.warnings);
    assert!(has("latin1.txt:3: invalid UTF-8"), "{:?}", r.warnings);
    assert!(has("doc.pdf: unsupported"), "{:?}", r.warnings);
    assert!(r.used_fallback_template);
    let format_of = |name: &str| {
        r.files
            .iter()
            .find(|f| f.file.ends_with(name))
            .map(|f| f.format.clone())
            .unwrap()
    };
    assert_eq!(format_of("pc.jsonl"), "prompt_completion");
    assert_eq!(format_of("chat.jsonl"), "messages");
    assert_eq!(format_of("alpaca.jsonl"), "alpaca");
    assert_eq!(format_of("text.jsonl"), "text");

    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.train.num_documents(), 15);
    assert_eq!(ds.val.num_documents(), 0);
    assert!(ds.has_mask());
    assert_eq!(ds.train.len() as u64, r.total_tokens);
    assert_eq!(ds.dtype(), data::manifest::Dtype::Uint16);
    // Every document ends with EOS; text documents are fully trained.
    for d in ds.train.documents() {
        assert_eq!(ds.train.tokens[d.end - 1], 2);
    }
    let html = ds
        .manifest
        .files
        .iter()
        .find(|f| f.path.ends_with("page.html"))
        .unwrap();
    let d = html.splits["train"].documents[0] as usize;
    let range = ds.train.document(d).unwrap();
    assert_eq!(tok.decode(&ds.train.tokens[range]), "Head\n\nPara & more");

    // --strict turns the warnings into an error naming them.
    let mut strict = opts(&src, &root.join("out-strict"));
    strict.strict = true;
    let err = ingest(&tok, &strict, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:2"), "{err}");
    assert!(err.contains("3 problem"), "{err}");
}

#[test]
fn incremental_reingests_only_changed_content() {
    let Some(tok) = tok512() else { return };
    let root = common::temp_dir("incremental");
    let src = root.join("src");
    write(&src, "one.txt", b"The dog ran home.\n");
    write(&src, "two.txt", b"The cat sat down.\n");
    write(&src, "three.txt", b"A bird sang a song.\n");
    let out = root.join("out");
    let mut o = opts(&src, &out);
    o.incremental = true;
    o.val_split = 0.3;
    let first = ingest(&tok, &o, &|_| {}).unwrap();
    assert_eq!((first.new_files, first.unchanged), (3, 0));

    // Touch one (same bytes, rewritten), edit another.
    std::fs::write(src.join("one.txt"), b"The dog ran home.\n").unwrap();
    std::fs::write(src.join("two.txt"), b"The cat sat down and slept.\n").unwrap();
    let events = Mutex::new(Vec::<FileEvent>::new());
    let second = ingest(&tok, &o, &|e| events.lock().unwrap().push(e.clone())).unwrap();
    assert_eq!((second.new_files, second.unchanged), (1, 2));
    let fresh: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| !e.reused)
        .map(|e| e.file.clone())
        .collect();
    assert_eq!(fresh.len(), 1);
    assert!(fresh[0].ends_with("two.txt"));

    // The result equals a from-scratch ingest of the same files.
    let full_out = root.join("full");
    let mut full = opts(&src, &full_out);
    full.val_split = 0.3;
    ingest(&tok, &full, &|_| {}).unwrap();
    let a = Dataset::open(&out).unwrap();
    let b = Dataset::open(&full_out).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.val, b.val);
    let text: String = a
        .train
        .documents()
        .chain(a.val.documents())
        .map(|r| {
            tok.decode(
                &a.train
                    .tokens
                    .get(r)
                    .map(<[u32]>::to_vec)
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert!(!text.is_empty());
}

fn smollm() -> Option<(Tokenizer, PathBuf)> {
    let gguf = common::smollm_gguf()?;
    Some((Tokenizer::from_path(&gguf).unwrap(), gguf))
}

#[test]
fn chat_masks_match_the_template_rendering_token_by_token() {
    let Some((tok, _)) = smollm() else { return };
    let root = common::temp_dir("masks");
    let msgs = vec![
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4."),
        ChatMessage::new("user", "And 3+3? 🦙"),
        ChatMessage::new("assistant", "6, naïvely."),
    ];
    let line = serde_json::json!({ "messages": msgs }).to_string();
    write(
        &root.join("src"),
        "chat.jsonl",
        format!("{line}\n").as_bytes(),
    );
    let out = root.join("out");
    ingest(&tok, &opts(&root.join("src"), &out), &|_| {}).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.train.num_documents(), 1);
    let mask = ds.train.mask.as_ref().unwrap();

    let template =
        ChatTemplate::new(tok.chat_template().unwrap(), "<|im_start|>", "<|im_end|>").unwrap();
    let rendered = template.render(&msgs, false).unwrap();
    let expected_ids = tok.encode_special(&rendered, tok.add_bos()).unwrap();
    // The rendering ends with the EOS token's text + newline, so no extra EOS is appended.
    assert_eq!(ds.train.tokens, expected_ids);

    // Each run of trained tokens decodes to one assistant turn with its end-of-turn marker;
    // every untrained token belongs to the prompt side of the rendering.
    let mut runs: Vec<(bool, Vec<u32>)> = Vec::new();
    for (&t, &m) in ds.train.tokens.iter().zip(mask) {
        match runs.last_mut() {
            Some((flag, ids)) if *flag == (m == 1) => ids.push(t),
            _ => runs.push((m == 1, vec![t])),
        }
    }
    let trained: Vec<String> = runs
        .iter()
        .filter(|r| r.0)
        .map(|r| tok.decode(&r.1))
        .collect();
    assert_eq!(trained, vec!["4.<|im_end|>\n", "6, naïvely.<|im_end|>\n"]);
    let untrained: String = runs
        .iter()
        .filter(|r| !r.0)
        .map(|r| tok.decode(&r.1))
        .collect();
    assert!(untrained.contains("<|im_start|>user\nWhat is 2+2?<|im_end|>"));
    assert!(untrained.ends_with("<|im_start|>assistant\n"));
    let all: String = runs.iter().map(|r| tok.decode(&r.1)).collect();
    assert_eq!(all, rendered);

    // --train-on-prompt: no mask at all.
    let mut o = opts(&root.join("src"), &root.join("out-all"));
    o.train_on_prompt = true;
    ingest(&tok, &o, &|_| {}).unwrap();
    let ds = Dataset::open(&root.join("out-all")).unwrap();
    assert!(ds.train.mask.is_none());
}

#[test]
fn sft_sets_with_smollm2_tokenizer() {
    let Some((tok, gguf)) = smollm() else { return };
    let Some(shared) = common::shared() else {
        return;
    };
    let sft = shared.join("data/sft");
    // gsm8k_train (4 MB) has the same shape as gsm8k_test; leave it out to keep this quick.
    let sources: Vec<PathBuf> = [
        "gsm8k_test.jsonl",
        "gsm8k_test_messages.jsonl",
        "mlx_wwdc25_prompt_completion_train.jsonl",
        "mlx_wwdc25_prompt_completion_valid.jsonl",
        "mlx_lora_wikisql_text_train.jsonl",
        "mlx_lora_wikisql_text_valid.jsonl",
        "mlx_lora_wikisql_text_test.jsonl",
    ]
    .iter()
    .map(|n| sft.join(n))
    .collect();
    let out = common::temp_dir("sft");
    let mut o = IngestOptions::new(sources, out.clone());
    o.tokenizer_source = gguf.display().to_string();
    o.val_split = 0.1;
    o.seed = 7;
    let r = ingest(&tok, &o, &|_| {}).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(!r.used_fallback_template);
    let fmt = |n: &str| {
        r.files
            .iter()
            .find(|f| f.file.ends_with(n))
            .unwrap()
            .clone()
    };
    assert_eq!(fmt("gsm8k_test.jsonl").format, "question_answer");
    assert_eq!(fmt("gsm8k_test.jsonl").documents, 1319);
    assert_eq!(fmt("gsm8k_test_messages.jsonl").format, "messages");
    assert_eq!(
        fmt("mlx_wwdc25_prompt_completion_train.jsonl").documents,
        1800
    );
    assert_eq!(fmt("mlx_lora_wikisql_text_train.jsonl").format, "text");
    let ds = Dataset::open(&out).unwrap();
    let docs = ds.train.num_documents() + ds.val.num_documents();
    assert_eq!(docs, 1319 * 2 + 1800 + 144 + 1000 + 100 + 100);
    let val_frac = ds.val.num_documents() as f64 / docs as f64;
    assert!((0.07..0.13).contains(&val_frac), "{val_frac}");
    let trained = ds.train.trained_tokens() as f64 / ds.train.len() as f64;
    assert!(trained > 0.2 && trained < 0.95, "{trained}");
    // Same question rendered from the Q/A file and the messages file gives identical tokens.
    let qa = ds
        .manifest
        .files
        .iter()
        .find(|f| f.path.ends_with("gsm8k_test.jsonl"))
        .unwrap();
    let msg = ds
        .manifest
        .files
        .iter()
        .find(|f| f.path.ends_with("gsm8k_test_messages.jsonl"))
        .unwrap();
    assert_eq!(qa.tokens, msg.tokens);
}

#[test]
fn records_the_template_refuses_are_warnings_with_line_numbers() {
    let Some(mut tok) = tok512() else { return };
    tok.set_chat_template(Some(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}".into(),
    ));
    let root = common::temp_dir("template-refuses");
    let src = root.join("src");
    write(
        &src,
        "chat.jsonl",
        b"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"assistant\",\"content\":\"x\"}]}\n",
    );
    let r = ingest(&tok, &opts(&src, &root.join("out")), &|_| {}).unwrap();
    assert_eq!(r.files[0].documents, 1);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("chat.jsonl:2: skipped"),
        "{:?}",
        r.warnings
    );
    assert!(r.warnings[0].contains("no system role"), "{:?}", r.warnings);
    let ds = Dataset::open(&root.join("out")).unwrap();
    let mask = ds.train.mask.as_ref().unwrap();
    let trained: Vec<u32> = ds
        .train
        .tokens
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t)
        .collect();
    // The template has no generation prompt: the "[assistant] " header is not trained.
    assert_eq!(tok.decode(&trained), "yo\n");
}
