#!/usr/bin/env python3
"""Checks that what `neuralforge` exports loads in transformers and PEFT and computes what we compute.

Not part of the test suite (it needs torch); run by hand, results go to docs/formats.md:

    python tools/verify_transformers.py --bin target/release/neuralforge --shared ../shared --work /tmp/nf-verify

1. SmolLM2 GGUF -> `neuralforge import` -> HF folder: transformers (AutoModelForCausalLM,
   AutoTokenizer) gives the reference prompt ids, top-10 logits and greedy text of
   shared/fixtures/smollm2/reference.json.
2. tiny-llama (PyTorch fixture) -> `neuralforge export --format hf`: transformers logits equal the
   fixture's logits.
3. A LoRA adapter trained by `neuralforge train` on stories260K: PEFT loads it, and its logits equal
   transformers' logits of `neuralforge export --merge`; greedy text equals `neuralforge generate
   --adapter`.
"""
import argparse, json, subprocess, sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def run(*args):
    print("+", " ".join(map(str, args)), file=sys.stderr)
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def check_smollm2(nf, shared, work):
    ref = json.loads((shared / "fixtures/smollm2/reference.json").read_text())
    out = work / "smollm2-hf"
    run(nf, "import", shared / "models/SmolLM2-135M-Instruct.Q4_1.gguf", "--out", out, "--force")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    worst = 0.0
    for p in ref["prompts"]:
        ids = tok(p["prompt"], add_special_tokens=True)["input_ids"]
        assert ids == p["token_ids"], (p["prompt"], ids, p["token_ids"])
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        for tid, val in p["top10"]:
            worst = max(worst, abs(logits[tid].item() - val))
        top = torch.topk(logits, 10).indices.tolist()
        assert top == [t for t, _ in p["top10"]], (top, p["top10"])
        if "greedy_ids" in p:
            gen = model.generate(torch.tensor([ids]), max_new_tokens=len(p["greedy_ids"]), do_sample=False)
            assert gen[0, len(ids):].tolist() == p["greedy_ids"][: gen.shape[1] - len(ids)]
    print(f"smollm2: transformers loads the imported folder; ids and top-10 equal; max |logit diff| {worst:.2e}")
    assert worst < 1e-3


def check_tiny(nf, shared, work):
    for name in ["tiny-llama", "tiny-llama-tied"]:
        fx = shared / "fixtures" / name
        out = work / f"{name}-hf"
        run(nf, "export", fx / "model", "--format", "hf", "--out", out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        tokens = load_file(str(fx / "batch.safetensors"))["tokens"].long()
        expected = load_file(str(fx / "forward_backward.safetensors"))["logits"]
        with torch.no_grad():
            got = model(tokens[:, :-1]).logits
        diff = (got - expected).abs().max().item()
        print(f"{name}: transformers logits of our HF export vs PyTorch fixture: max diff {diff:.2e}")
        assert diff < 1e-4


def check_peft(nf, shared, work):
    from peft import PeftModel

    base = work / "stories260k-hf"
    run(nf, "import", shared / "data/stories260K/stories260K.bin", "--out", base, "--force")
    runs = work / "lora-run"
    run(nf, "train", "--model", base, "--data", shared / "data/tinystories/TinyStories-validation.head.txt",
        "--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", "q,k,v,o,gate,up,down",
        "--steps", "20", "--batch-size", "4", "--seq-len", "64", "--lr", "1e-2", "--out", runs, "--no-progress")
    adapter = runs / "adapter"
    merged = work / "stories260k-merged"
    run(nf, "export", base, "--format", "hf", "--merge", adapter, "--out", merged)
    tok = AutoTokenizer.from_pretrained(base)
    ids = torch.tensor([tok("Once upon a time", add_special_tokens=True)["input_ids"]])
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b, c = peft_model(ids).logits, merged_model(ids).logits, plain(ids).logits
    diff = (a - b).abs().max().item()
    moved = (a - c).abs().max().item()
    print(f"peft: adapter loads; PEFT logits vs our --merge export: max diff {diff:.2e} (adapter moves logits by {moved:.2e})")
    assert diff < 1e-4 and moved > 1e-3
    with torch.no_grad():
        gen = peft_model.generate(ids, max_new_tokens=30, do_sample=False)[0, ids.shape[1]:].tolist()
    ours = run(nf, "generate", "--model", base, "--adapter", adapter, "--prompt", "Once upon a time",
               "--temp", "0", "--max-tokens", "30", "--json")
    our_ids = [json.loads(l)["token_id"] for l in ours.splitlines() if '"type":"token"' in l]
    print(f"peft greedy ids == neuralforge generate --adapter: {gen == our_ids}")
    assert gen == our_ids, (gen, our_ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, type=Path)
    ap.add_argument("--shared", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    check_tiny(a.bin, a.shared, a.work)
    check_smollm2(a.bin, a.shared, a.work)
    check_peft(a.bin, a.shared, a.work)
    print("all transformers / PEFT checks passed")


if __name__ == "__main__":
    main()
