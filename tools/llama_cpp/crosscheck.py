#!/usr/bin/env python3
"""Greedy text and log-probabilities of llama.cpp and `neuralforge generate` on the same GGUF files.

Not part of the test suite (it needs a llama.cpp build); run by hand, results go to docs/formats.md:

    python3 tools/llama_cpp/crosscheck.py --bin target/release/neuralforge \\
        --logprobs /path/to/logprobs --dir /tmp/xcheck shared.gguf q8_0.gguf ...

`logprobs` is tools/llama_cpp/logprobs.c built against llama.cpp (see its header). For every
file and prompt both engines decode 32 greedy tokens and report the top-5 log-probabilities at
each step. Printed per case and setting of ours: `=` when all tokens agree, else the step where
they part and both engines' margins there (log p of its own choice minus log p of the other's);
and the "noise", the largest |Δ log p| over tokens in both top-5 lists on the steps before.
Then, for the first token only: how far llama.cpp moves from itself when only its kernels
change (weight repacking off; flash attention off with an f32 cache), next to how far we are.
"""
import argparse, json, subprocess, sys

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "def fibonacci(n):",
    "The three primary colors are",
]
OURS = {
    "default": [],
    "act8": ["--act-bits", "8"],
    "act8+f16kv": ["--act-bits", "8", "--kv-cache", "f16"],
}


def ours(nf, model, prompt, steps, extra):
    out = subprocess.run(
        [nf, "generate", "--model", model, "--prompt", prompt, "--temp", "0", "--max-tokens",
         str(steps), "--threads", "2", "--logprobs", "5", "--json", *extra],
        capture_output=True, text=True, check=True).stdout
    events = (json.loads(line) for line in out.splitlines())
    return [(e["token_id"], {t["token_id"]: t["logprob"] for t in e["top_logprobs"]})
            for e in events if e.get("type") == "token"]


def llama(lp, model, prompt, steps, flags=()):
    out = subprocess.run([lp, model, prompt, str(steps), *flags],
                         capture_output=True, text=True, check=True).stdout
    steps = []
    for line in out.splitlines()[1:]:
        chosen, *top = line.split()
        steps.append((int(chosen), {int(i): float(p) for i, p in (t.split(":") for t in top)}))
    return steps


def compare(a, b):
    """(parting step or None, margins there, noise on the steps before)."""
    noise = 0.0
    for i, ((ta, pa), (tb, pb)) in enumerate(zip(a, b)):
        if ta != tb:
            margin = lambda p, own, other: p[own] - p.get(other, float("-inf"))
            return i, (margin(pa, ta, tb), margin(pb, tb, ta)), noise
        common = set(pa) & set(pb)
        noise = max([noise] + [abs(pa[k] - pb[k]) for k in common])
    return None, None, noise


def first_step_noise(a, b):
    """The largest |Δ log p| over tokens in both top-5 lists at the first step."""
    (_, pa), (_, pb) = a[0], b[0]
    return max([0.0] + [abs(pa[k] - pb[k]) for k in set(pa) & set(pb)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--logprobs", required=True)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    equal = {name: 0 for name in OURS}
    either = own = 0
    print("| file | prompt | " + " | ".join(OURS) + " |")
    print("|---|---|" + "---|" * len(OURS))
    for f in args.files:
        for i, p in enumerate(PROMPTS):
            ref = llama(args.logprobs, f, p, args.steps)
            plain = [t for t, _ in llama(args.logprobs, f, p, args.steps, ["--no-fa", "--kv-f32"])]
            cells, hit = [], False
            own += [t for t, _ in ref] == plain
            for name, extra in OURS.items():
                mine = ours(args.bin, f, p, args.steps, extra)
                hit |= [t for t, _ in mine] in ([t for t, _ in ref], plain)
                part, margins, noise = compare(ref, mine)
                if part is None:
                    equal[name] += 1
                    cells.append(f"= (noise {noise:.3f})")
                else:
                    cells.append(f"parts at {part}, margins {margins[0]:.2f}/{margins[1]:.2f}, "
                                 f"noise {noise:.3f}")
            either += hit
            print(f"| {f} | {i} | " + " | ".join(cells) + " |", flush=True)
    total = len(args.files) * len(PROMPTS)
    print(f"\nall {args.steps} tokens equal to llama.cpp's default, of {total}: {equal}")
    print(f"one of ours equal to one of llama.cpp's two (default; no flash attention with an "
          f"f32 KV cache): {either} of {total}")
    print(f"llama.cpp's two settings agree with each other: {own} of {total}")
    print("\n| file | prompt | llama.cpp vs itself: repack off | vs itself: no flash attention, "
          "f32 KV | ours act8 vs llama.cpp no-FA f32 KV | ours default vs the same |")
    print("|---|---|---|---|---|---|")
    for f in args.files:
        for i, p in enumerate(PROMPTS[:2]):
            base = llama(args.logprobs, f, p, 1)
            plain = llama(args.logprobs, f, p, 1, ["--no-fa", "--kv-f32"])
            cells = [first_step_noise(base, llama(args.logprobs, f, p, 1, ["--no-repack"])),
                     first_step_noise(base, plain),
                     first_step_noise(plain, ours(args.bin, f, p, 1, OURS["act8"])),
                     first_step_noise(plain, ours(args.bin, f, p, 1, []))]
            print(f"| {f} | {i} | " + " | ".join(f"{c:.2e}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
