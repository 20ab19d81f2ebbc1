//! The CLI's trust rules end to end (issue "Trust the CLI"): one writer per run folder, wrong
//! kinds of input refused before anything is written, datasets of another tokenizer refused,
//! no overwrite without --force, the tokenizer travelling with checkpoints, honest summaries,
//! defaults in --help, completions and argument errors as events.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

fn tmp(name: &str) -> PathBuf {
    common::tmp("trust", name)
}

fn nf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neuralforge"))
}

fn run(args: &[&str]) -> Output {
    nf().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into()
}

/// The first `error` event of a --json run, with its exit status.
fn error_of(o: &Output) -> (i32, String, String) {
    let e = events(o)
        .into_iter()
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("no error event: {}", stderr(o)));
    (
        o.status.code().unwrap_or(-1),
        e["code"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

/// A small text corpus and a byte-level BPE tokenizer trained on it.
fn corpus_and_tokenizer(d: &Path, vocab: &str) -> (PathBuf, PathBuf) {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "with", "red",
    ];
    let mut text = String::new();
    for doc in 0..200 {
        for w in 0..40 {
            text.push_str(words[(doc * 7 + w * 3 + w * w) % words.len()]);
            text.push(' ');
        }
        text.push_str("\n\n");
    }
    let corpus = d.join("corpus.txt");
    std::fs::write(&corpus, text).unwrap();
    let tok_dir = d.join(format!("tok{vocab}"));
    let o = run(&[
        "tokenizer",
        "train",
        "--vocab-size",
        vocab,
        "--out",
        s(&tok_dir),
        s(&corpus),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (corpus, tok_dir.join("tokenizer.json"))
}

fn train_args<'a>(corpus: &'a Path, tok: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--json",
        "--init",
        "tiny",
        "--tokenizer",
        s(tok),
        "--data",
        s(corpus),
        "--steps",
        steps,
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--threads",
        "1",
        "--val-split",
        "0.1",
        "--val-every",
        "10",
        "--val-batches",
        "1",
        "--ckpt-every",
        "5",
        "--no-progress",
        "--out",
        s(out),
    ]
}

/// A short tiny-model run from scratch into `out` (must succeed); `extra` flags are added.
fn quick_run(corpus: &Path, tok: &Path, out: &Path, steps: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "train",
        "--init",
        "tiny",
        "--tokenizer",
        s(tok),
        "--data",
        s(corpus),
        "--steps",
        steps,
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--out",
        s(out),
    ];
    a.extend_from_slice(extra);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// Every file under `dir` with its bytes, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_second_writer_is_refused_and_the_first_run_is_undisturbed() {
    let d = tmp("lock");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let run_dir = d.join("run");
    let first = nf()
        .args(train_args(&corpus, &tok, &run_dir, "100000"))
        .args(["--warmup", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first run has written a checkpoint.
    let t0 = std::time::Instant::now();
    while formats::checkpoint::list(&run_dir.join("checkpoints"))
        .map(|l| l.is_empty())
        .unwrap_or(true)
    {
        assert!(t0.elapsed().as_secs() < 60, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = first.id().to_string();
    for second in [
        train_args(&corpus, &tok, &run_dir, "20"),
        vec!["train", "--json", "--resume", s(&run_dir)],
    ] {
        let o = run(&second);
        let (exit, code, msg) = error_of(&o);
        assert_eq!((exit, code.as_str()), (75, "locked"), "{msg}");
        assert!(msg.contains(&pid), "names the holder's pid: {msg}");
    }
    // kill -9 the holder: its lock goes with it, and the resume continues from a checkpoint.
    let _ = Command::new("kill").args(["-9", &pid]).status();
    let out = first.wait_with_output().unwrap();
    let logged = std::fs::read_to_string(run_dir.join("events.ndjson")).unwrap();
    let count = |t: &str| {
        logged
            .lines()
            .filter(|l| l.contains(&format!("\"type\":\"{t}\"")))
            .count()
    };
    assert_eq!(count("init"), 1, "only the first run wrote events");
    assert_eq!(count("done"), 0);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"error\""));
    let o = run(&[
        "train",
        "--json",
        "--resume",
        s(&run_dir),
        "--steps",
        "30",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = events(&o);
    assert!(ev.iter().any(|e| e["type"] == "restart"));
    assert_eq!(ev.last().unwrap()["type"], "done");
    assert!(stderr(&o).contains("resumed from step"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn wrong_kinds_of_input_are_named_and_nothing_is_written() {
    let d = tmp("kinds");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let notes = d.join("notes.json");
    std::fs::write(&notes, "{\"title\": \"my notes\", \"items\": [1, 2, 3]}\n").unwrap();
    let text_bin = d.join("story.bin");
    std::fs::copy(&corpus, &text_bin).unwrap();
    let gguf_as_data = d.join("model.bin");
    std::fs::write(&gguf_as_data, b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let run_dir = d.join("run");
    for (data, says) in [
        (&notes, "is a JSON file, not raw token ids"),
        (&text_bin, "is a text file, not raw token ids"),
        (&gguf_as_data, "is a GGUF model file"),
    ] {
        let mut a = train_args(&corpus, &tok, &run_dir, "5");
        let i = a.iter().position(|x| *x == "--data").unwrap();
        a[i + 1] = s(data);
        let (exit, code, msg) = error_of(&run(&a));
        assert_eq!((exit, code.as_str()), (4, "data"), "{msg}");
        assert!(msg.contains(says) && msg.contains(s(data)), "{msg}");
        assert!(!run_dir.exists(), "a failed start leaves no run folder");
    }
    // eval takes what train takes: text is tokenized, JSON is refused the same way.
    quick_run(&corpus, &tok, &run_dir, "3", &["--no-progress"]);
    let o = run(&[
        "eval",
        "--json",
        "--model",
        s(&run_dir),
        "--data",
        s(&corpus),
        "--seq-len",
        "32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert!(
        r["loss"].as_f64().unwrap() < 7.0,
        "text tokenized, not read as ids: {r}"
    );
    assert!(
        stderr(&o).contains("using its final model"),
        "{}",
        stderr(&o)
    );
    let (exit, code, msg) = error_of(&run(&[
        "eval",
        "--json",
        "--model",
        s(&run_dir),
        "--data",
        s(&notes),
    ]));
    assert_eq!((exit, code.as_str()), (4, "data"), "{msg}");
    // A model path that is something else says what it is.
    let ds = d.join("ds");
    let o = run(&[
        "ingest",
        s(&corpus),
        "--tokenizer",
        s(&tok),
        "--out",
        s(&ds),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (model, says) in [
        (&ds, "dataset"),
        (&tok, "tokenizer"),
        (&corpus, "text file"),
    ] {
        let (exit, code, msg) = error_of(&run(&[
            "generate",
            "--json",
            "--model",
            s(model),
            "--prompt",
            "a",
        ]));
        assert_eq!((exit, code.as_str()), (3, "model"), "{msg}");
        assert!(msg.contains(says) && msg.contains("not a model"), "{msg}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_dataset_of_another_tokenizer_is_refused() {
    let d = tmp("tokmismatch");
    let (corpus, tok_a) = corpus_and_tokenizer(&d, "300");
    let (_, tok_b) = corpus_and_tokenizer(&d, "280");
    let ds = d.join("ds");
    let o = run(&[
        "ingest",
        s(&corpus),
        "--tokenizer",
        s(&tok_a),
        "--out",
        s(&ds),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = |tok: &Path| -> Vec<String> {
        [
            "train",
            "--json",
            "--dry-run",
            "--init",
            "tiny",
            "--tokenizer",
            s(tok),
            "--data",
            s(&ds),
            "--seq-len",
            "32",
            "--batch-size",
            "2",
            "--out",
            s(&d.join("run")),
        ]
        .map(String::from)
        .to_vec()
    };
    let args = base(&tok_b);
    let (exit, code, msg) = error_of(&nf().args(&args).output().unwrap());
    assert_eq!((exit, code.as_str()), (4, "data"), "{msg}");
    assert!(msg.contains("another tokenizer"), "{msg}");
    let o = nf().args(base(&tok_a)).output().unwrap();
    assert!(
        o.status.success(),
        "the same tokenizer passes: {}",
        stderr(&o)
    );
    let mut forced = args.clone();
    forced.push("--allow-tokenizer-mismatch".into());
    assert!(nf().args(&forced).output().unwrap().status.success());
    let (exit, _, msg) = error_of(&run(&[
        "data",
        "preview",
        "--json",
        s(&ds),
        "--tokenizer",
        s(&tok_b),
    ]));
    assert_eq!(exit, 4, "{msg}");
    assert!(!d.join("run").exists(), "a dry run writes nothing");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn outputs_are_never_overwritten_without_force() {
    let d = tmp("overwrite");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let run_dir = d.join("run");
    quick_run(
        &corpus,
        &tok,
        &run_dir,
        "4",
        &["--ckpt-every", "2", "--no-progress"],
    );
    let refuse = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--json");
        let (exit, code, msg) = error_of(&run(&a));
        assert_eq!((exit, code.as_str()), (7, "exists"), "{args:?}: {msg}");
        assert!(msg.contains("--force"), "{msg}");
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    // export: the file itself, a folder, and the tokenizer.bin a llama2c export writes beside.
    let gguf = d.join("m.gguf");
    std::fs::write(&gguf, b"precious").unwrap();
    refuse(&["export", s(&run_dir), "--format", "gguf", "--out", s(&gguf)]);
    assert_eq!(std::fs::read(&gguf).unwrap(), b"precious");
    ok(&[
        "export",
        s(&run_dir),
        "--format",
        "gguf",
        "--out",
        s(&gguf),
        "--force",
    ]);
    assert!(std::fs::read(&gguf).unwrap().starts_with(b"GGUF"));
    let hf = d.join("hf");
    ok(&["export", s(&run_dir), "--format", "hf", "--out", s(&hf)]);
    refuse(&["export", s(&run_dir), "--format", "hf", "--out", s(&hf)]);
    let l2c = d.join("l2c/model.bin");
    std::fs::create_dir_all(l2c.parent().unwrap()).unwrap();
    std::fs::write(l2c.with_file_name("tokenizer.bin"), b"mine").unwrap();
    refuse(&[
        "export",
        s(&run_dir),
        "--format",
        "llama2c",
        "--out",
        s(&l2c),
    ]);
    assert!(!l2c.exists());
    // tokenizer train: both of its files.
    refuse(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--out",
        s(tok.parent().unwrap()),
        s(&corpus),
    ]);
    let named = d.join("named.json");
    std::fs::write(d.join("named_config.json"), b"{}").unwrap();
    refuse(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--out",
        s(&named),
        s(&corpus),
    ]);
    assert!(!named.exists());
    // ingest into a folder that is not a dataset.
    let mine = d.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("diary.txt"), b"dear diary").unwrap();
    refuse(&[
        "ingest",
        s(&corpus),
        "--tokenizer",
        s(&tok),
        "--out",
        s(&mine),
    ]);
    ok(&[
        "ingest",
        s(&corpus),
        "--tokenizer",
        s(&tok),
        "--out",
        s(&mine),
        "--force",
    ]);
    assert_eq!(
        std::fs::read(mine.join("diary.txt")).unwrap(),
        b"dear diary"
    );
    // quickstart into an existing folder changes no byte there.
    let before = snapshot(&d);
    refuse(&[
        "quickstart",
        "--out",
        s(&d),
        "--steps",
        "2",
        "--stories",
        "10",
    ]);
    assert!(
        snapshot(&d) == before,
        "quickstart touched the existing folder"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn checkpoints_and_run_folders_generate_and_export_with_their_tokenizer() {
    let d = tmp("travel");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let run_dir = d.join("run");
    // Interrupted by --steps before a final model: only checkpoints exist after the first run.
    let o = quick_run(
        &corpus,
        &tok,
        &run_dir,
        "6",
        &[
            "--ckpt-every",
            "3",
            "--val-split",
            "0.1",
            "--val-every",
            "3",
            "--val-batches",
            "1",
        ],
    );
    let err = stderr(&o);
    for needle in [
        "finished at step 6/6",
        "best val",
        "(step",
        "train longer neuralforge train --resume",
    ] {
        assert!(err.contains(needle), "summary lacks {needle:?}: {err}");
    }
    assert!(
        err.contains(" @3 ") || err.contains(" @6 "),
        "val labelled with its step: {err}"
    );
    let ckpt = run_dir.join("checkpoints/step-000003");
    assert!(
        ckpt.join("tokenizer.json").is_file(),
        "the checkpoint carries the tokenizer"
    );
    assert!(run_dir.join("best/tokenizer.json").is_file());
    for model in [&ckpt, &run_dir] {
        let o = run(&[
            "generate",
            "--model",
            s(model),
            "--prompt",
            "the cat",
            "--temp",
            "0",
            "--max-tokens",
            "5",
        ]);
        assert!(o.status.success(), "{}: {}", model.display(), stderr(&o));
        let out = d.join(format!(
            "exp-{}.gguf",
            model.file_name().unwrap().to_str().unwrap()
        ));
        let o = run(&["export", s(model), "--format", "gguf", "--out", s(&out)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let back = formats::load_model(&out).unwrap();
        assert!(
            back.tokenizer.is_some(),
            "{} exported with its tokenizer",
            model.display()
        );
    }
    // export --tokenizer replaces it.
    let (_, other) = corpus_and_tokenizer(&d, "280");
    let hf = d.join("hf");
    let o = run(&[
        "export",
        s(&ckpt),
        "--format",
        "hf",
        "--out",
        s(&hf),
        "--tokenizer",
        s(&other),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(hf.join("tokenizer.json")).unwrap(),
        std::fs::read(&other).unwrap()
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_eta_after_resume_counts_only_the_new_steps() {
    let d = tmp("eta");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let run_dir = d.join("run");
    let mut a = train_args(&corpus, &tok, &run_dir, "200");
    a.retain(|x| *x != "--json");
    assert!(run(&a).status.success());
    let o = run(&[
        "train",
        "--resume",
        s(&run_dir),
        "--steps",
        "400",
        "--no-progress",
        "--batch-size",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("resumed from step 200 of 400"), "{err}");
    // Plain progress lines "step N/400 | ... | 0:03 < eta 0:02": elapsed + eta at step N must
    // predict the whole session (steps 200..400) within a factor of 3, as the old bar's
    // rate over all N steps did not.
    let secs = |t: &str| -> f64 {
        t.split(':')
            .fold(0.0, |acc, p| acc * 60.0 + p.trim().parse::<f64>().unwrap())
    };
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("step ") && l.contains("eta"))
        .collect();
    assert!(!lines.is_empty(), "{err}");
    let first = lines[0];
    let step: u64 = first[5..first.find('/').unwrap()].parse().unwrap();
    let timing = first.rsplit(" | ").next().unwrap();
    let (el, eta) = timing.split_once(" < eta ").unwrap();
    let (el, eta) = (secs(el), secs(eta));
    let predicted_total = el + eta;
    let implied_rate = (step - 200) as f64 / el.max(0.5);
    let expected_total = 200.0 / implied_rate.max(1e-9);
    assert!(eta > 0.0 || el < 1.0, "{first}");
    assert!(
        predicted_total <= expected_total * 3.0 + 2.0,
        "{first}: predicted {predicted_total}, expected about {expected_total}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn help_shows_every_default_and_completions_generate() {
    let o = run(&["train", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    // Options without a default: inputs the user must name, and switches.
    let no_default = [
        "--config",
        "--resume",
        "--model",
        "--init",
        "--tokenizer",
        "--data",
        "--val-data",
    ];
    let mut checked = 0;
    for line in help.lines().map(str::trim).filter(|l| l.starts_with("--")) {
        let flag = line.split([' ', '=']).next().unwrap();
        let takes_value = line
            .split_whitespace()
            .nth(1)
            .is_some_and(|w| w.starts_with('<') || w.starts_with("[<"));
        if !takes_value || no_default.contains(&flag) {
            continue;
        }
        assert!(
            line.contains("[default: "),
            "{flag} shows no default: {line}"
        );
        checked += 1;
    }
    assert!(checked >= 25, "parsed only {checked} options:\n{help}");
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success() && o.stdout.len() > 1000, "{shell}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("lora-rank"),
            "{shell}"
        );
    }
    // Argument errors are events too, with the usage exit code.
    let o = run(&["train", "--json", "--no-such-flag"]);
    let (exit, code, msg) = error_of(&o);
    assert_eq!((exit, code.as_str()), (2, "invalid_argument"), "{msg}");
    assert!(msg.contains("--no-such-flag"), "{msg}");
    let (exit, _, msg) = error_of(&run(&[
        "train",
        "--json",
        "--init",
        "tiny",
        "--data",
        "x.bin",
        "--lora-targets",
        "q",
    ]));
    assert_eq!(exit, 2);
    assert!(
        msg.contains("--lora-rank"),
        "LoRA flags without a rank: {msg}"
    );
    // The options schema the studio reads.
    let o = run(&["options", "train"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lr = v["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "lr")
        .unwrap();
    assert_eq!(lr["group"], "Optimizer");
    assert!(lr["default"].as_str().unwrap().starts_with("0.0003"));
}

#[test]
fn chat_reads_commands_and_prompts_come_from_files() {
    use std::io::Write;
    let d = tmp("chat");
    let (corpus, tok) = corpus_and_tokenizer(&d, "300");
    let run_dir = d.join("run");
    quick_run(&corpus, &tok, &run_dir, "3", &["--no-progress"]);
    let with_stdin = |args: &[&str], input: &str| -> Output {
        let mut child = nf()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The tokenizer's ChatML template travelled into the model; /reset and /exit are commands.
    let o = with_stdin(
        &[
            "generate",
            "--json",
            "--model",
            s(&run_dir),
            "--chat",
            "--max-tokens",
            "4",
            "--seed",
            "3",
        ],
        "hi\n/reset\nhello\n/exit\nnever answered\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let done: Vec<Value> = events(&o)
        .into_iter()
        .filter(|e| e["type"] == "generate_done")
        .collect();
    assert_eq!(done.len(), 2, "two turns, then /exit: {}", stderr(&o));
    assert!(
        done.iter().all(|e| e["stop_reason"].is_string()),
        "{done:?}"
    );
    assert!(events(&o)
        .iter()
        .any(|e| e["key"] == "seed" && e["value"] == 3));
    // --prompt-file - reads the prompt from standard input; a file works the same.
    let greedy = [
        "generate",
        "--json",
        "--model",
        s(&run_dir),
        "--temp",
        "0",
        "--max-tokens",
        "6",
    ];
    let text_of = |o: &Output| -> String {
        events(o)
            .iter()
            .filter(|e| e["type"] == "token")
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect()
    };
    let mut a = greedy.to_vec();
    a.extend(["--prompt-file", "-"]);
    let from_stdin = with_stdin(&a, "the cat\n");
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    let f = d.join("prompt.txt");
    std::fs::write(&f, "the cat\n").unwrap();
    let mut b = greedy.to_vec();
    b.extend(["--prompt-file", s(&f)]);
    let from_file = run(&b);
    let mut c = greedy.to_vec();
    c.extend(["--prompt", "the cat"]);
    let from_flag = run(&c);
    assert_eq!(text_of(&from_stdin), text_of(&from_flag));
    assert_eq!(text_of(&from_file), text_of(&from_flag));
    std::fs::remove_dir_all(&d).unwrap();
}
