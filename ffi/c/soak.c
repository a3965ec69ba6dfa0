#define _POSIX_C_SOURCE 200809L
/* Soak test through the C ABI: 8 threads generate on one shared model with different seeds while
 * a control thread attaches, detaches and toggles a LoRA adapter on it, for a bounded time.
 * Every result must equal the single-threaded result for its seed, with or without the adapter
 * (generations hold the model's read lock, so each sees one consistent adapter state).
 * usage: soak REPO_ROOT SECONDS   (run under AddressSanitizer by ffi/run.sh) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graftlm.h"

#define THREADS 8
#define TOKENS 12
#define NAME "litgpt-lora-llama/step-000004"
static const char *PROMPT = "The function returns a value";

static graftlm_model *model;
static uint32_t with_adapter[THREADS][TOKENS], without[THREADS][TOKENS];
static volatile int stop_flag = 0;
static int mismatches = 0, errors = 0, runs = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static graftlm_gen_params params(int i) {
    graftlm_gen_params p = graftlm_gen_params_default();
    p.max_new_tokens = TOKENS;
    p.temperature = 0.9f;
    p.seed = 1000 + (uint64_t)i;
    p.raw = true;
    return p;
}

static int run_one(int i, uint32_t out[TOKENS]) {
    graftlm_gen_params p = params(i);
    graftlm_result *r = NULL;
    if (graftlm_generate(model, PROMPT, &p, &r) != GRAFTLM_OK) return 0;
    size_t n = 0;
    const uint32_t *ids = graftlm_result_ids(r, &n);
    int ok = n == TOKENS;
    if (ok) memcpy(out, ids, sizeof(uint32_t) * TOKENS);
    graftlm_result_free(r);
    return ok;
}

static void *worker(void *arg) {
    int i = (int)(intptr_t)arg;
    while (!stop_flag) {
        uint32_t got[TOKENS];
        int ok = run_one(i, got);
        pthread_mutex_lock(&lock);
        runs++;
        if (!ok) errors++;
        else if (memcmp(got, with_adapter[i], sizeof got) != 0 && memcmp(got, without[i], sizeof got) != 0) mismatches++;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : ".";
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    char base[4096], run[4096];
    snprintf(base, sizeof base, "%s/tests/fixtures/models/llama/lit", root);
    snprintf(run, sizeof run, "%s/tests/fixtures/adapters/litgpt-lora-llama", root);
    if (graftlm_model_load(base, &model) != GRAFTLM_OK) { fprintf(stderr, "load: %s\n", graftlm_last_error()); return 1; }
    graftlm_adapter *a = NULL;
    if (graftlm_adapter_load(model, run, 4, NULL, &a) != GRAFTLM_OK) { fprintf(stderr, "adapter: %s\n", graftlm_last_error()); return 1; }
    /* Single-threaded references for every seed, in both states. */
    for (int i = 0; i < THREADS; i++) if (!run_one(i, without[i])) return 1;
    if (graftlm_model_attach(model, a, 1.0f, false) != GRAFTLM_OK) return 1;
    for (int i = 0; i < THREADS; i++) if (!run_one(i, with_adapter[i])) return 1;

    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int changes = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > seconds) break;
        graftlm_status s;
        switch (changes % 4) {
            case 0: s = graftlm_model_detach(model, NAME); break;
            case 1: s = graftlm_model_attach(model, a, 1.0f, changes % 8 == 1); break;
            case 2: s = graftlm_model_activate(model, NAME, false); break;
            default: s = graftlm_model_activate(model, NAME, true); break;
        }
        if (s != GRAFTLM_OK) { fprintf(stderr, "change %d: %s\n", changes, graftlm_last_error()); errors++; }
        changes++;
    }
    stop_flag = 1;
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    graftlm_adapter_free(a);
    graftlm_model_free(model);
    printf("soak: %d generations on %d threads, %d adapter changes, %d mismatches, %d errors\n", runs, THREADS, changes,
           mismatches, errors);
    return (mismatches || errors || runs < THREADS) ? 1 : 0;
}
