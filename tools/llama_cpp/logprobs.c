// Greedy decoding with llama.cpp's library, printing what `neuralforge generate --logprobs 5`
// reports, so the two engines can be compared step by step (tools/llama_cpp/crosscheck.py).
//
//   logprobs MODEL.gguf PROMPT N [--no-fa] [--kv-f32] [--no-repack]
//
// Prints "prompt ID..." and then per step: "ID ID:LOGPROB x5" (the chosen token, then the five
// most likely with their log-softmax). The prompt is evaluated in one batch, then N greedy
// steps, on 2 threads. Default settings are llama.cpp's own (flash attention auto, f16 KV
// cache, weight repacking on).
//
// Build against a llama.cpp build tree LL (outside this repository), in one line:
//   cc -O2 logprobs.c -I$LL/include -I$LL/ggml/include -L$LL/build/bin -lllama -lggml
//      -lggml-base -lm -Wl,-rpath,$LL/build/bin -o logprobs
#include "llama.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *data) {
    (void)level, (void)text, (void)data;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT N [--no-fa] [--kv-f32] [--no-repack]\n", argv[0]);
        return 2;
    }
    int no_fa = 0, kv_f32 = 0, no_repack = 0;
    for (int i = 4; i < argc; i++) {
        no_fa |= !strcmp(argv[i], "--no-fa");
        kv_f32 |= !strcmp(argv[i], "--kv-f32");
        no_repack |= !strcmp(argv[i], "--no-repack");
    }
    const int steps = atoi(argv[3]);
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = !no_repack;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_threads = cp.n_threads_batch = 2;
    if (no_fa) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (kv_f32) cp.type_k = cp.type_v = GGML_TYPE_F32;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_token prompt[1024];
    const int n = llama_tokenize(vocab, argv[2], strlen(argv[2]), prompt, 1024, false, true);
    if (n <= 0) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }
    printf("prompt");
    for (int i = 0; i < n; i++) printf(" %d", prompt[i]);
    printf("\n");
    if (llama_decode(ctx, llama_batch_get_one(prompt, n))) return 1;
    for (int s = 0; s < steps; s++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        double max = -INFINITY, z = 0;
        for (int i = 0; i < n_vocab; i++) max = logits[i] > max ? logits[i] : max;
        for (int i = 0; i < n_vocab; i++) z += exp(logits[i] - max);
        const double log_z = max + log(z);
        int top[5];
        for (int k = 0; k < 5; k++) {
            int best = -1;
            for (int i = 0; i < n_vocab; i++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= top[j] == i;
                if (!taken && (best < 0 || logits[i] > logits[best])) best = i;
            }
            top[k] = best;
        }
        llama_token next = top[0];
        printf("%d", next);
        for (int k = 0; k < 5; k++) printf(" %d:%.6f", top[k], logits[top[k]] - log_z);
        printf("\n");
        if (llama_vocab_is_eog(vocab, next)) break;
        if (llama_decode(ctx, llama_batch_get_one(&next, 1))) return 1;
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
