#define _POSIX_C_SOURCE 200809L
/* Soak test through the C ABI: 8 threads generate on one shared model with different seeds while
 * a control thread attaches, detaches and toggles a LoRA adapter on it, for a bounded time.
 * Every result must equal the single-threaded result for its seed, with or without the adapter
 * (generations hold the model's read lock, so each sees one consistent adapter state). Odd
 * workers stream, with a callback that tries to re-enter the model (it must get
 * GRAFTLM_ERR_BUSY, never deadlock); a churn thread creates and frees adapters, sessions and
 * whole models and then uses the freed handles (GRAFTLM_ERR_INVALID_HANDLE, never a crash).
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
static int mismatches = 0, errors = 0, runs = 0, reentries = 0, churns = 0;
static char base[4096], run[4096];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static graftlm_gen_params params(int i) {
    graftlm_gen_params p = graftlm_gen_params_default();
    p.max_new_tokens = TOKENS;
    p.temperature = 0.9f;
    p.seed = 1000 + (uint64_t)i;
    p.raw = true;
    return p;
}

/* Tries to re-enter the model from its own callback: refused with BUSY. */
static bool reenter(void *user_data, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    int *busy = user_data;
    graftlm_gen_params p = graftlm_gen_params_default();
    graftlm_result *r = NULL;
    if (graftlm_model_detach(model, NAME) == GRAFTLM_ERR_BUSY &&
        graftlm_generate(model, "x", &p, &r) == GRAFTLM_ERR_BUSY && r == NULL)
        ++*busy;
    return true;
}

static int run_one(int i, uint32_t out[TOKENS]) {
    graftlm_gen_params p = params(i);
    graftlm_result *r = NULL;
    int busy = 0;
    graftlm_status s = i % 2 ? graftlm_generate_stream(model, PROMPT, &p, reenter, &busy, &r)
                             : graftlm_generate(model, PROMPT, &p, &r);
    if (s != GRAFTLM_OK) return 0;
    if (i % 2 && busy == 0) { graftlm_result_free(r); return 0; }
    if (busy) {
        pthread_mutex_lock(&lock);
        reentries += busy;
        pthread_mutex_unlock(&lock);
    }
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

/* Creates, uses and frees handles, then uses the freed ones: every stale use is refused. */
static void *churn(void *arg) {
    (void)arg;
    graftlm_gen_params p = params(0);
    p.max_new_tokens = 2;
    while (!stop_flag) {
        int bad = 0;
        graftlm_adapter *a = NULL;
        graftlm_session *s = NULL;
        graftlm_model *m2 = NULL;
        graftlm_result *r = NULL;
        if (graftlm_adapter_load(model, run, 2, "churn", &a) != GRAFTLM_OK) bad++;
        graftlm_adapter_free(a);
        if (graftlm_model_attach(model, a, 1.0f, false) != GRAFTLM_ERR_INVALID_HANDLE) bad++;
        graftlm_adapter_free(a);
        if (graftlm_session_new(model, &s) != GRAFTLM_OK) bad++;
        if (graftlm_session_send(s, "Hi", &p, NULL, NULL, &r) != GRAFTLM_OK) bad++;
        graftlm_result_free(r);
        graftlm_session_free(s);
        if (graftlm_session_send(s, "Hi", &p, NULL, NULL, &r) != GRAFTLM_ERR_INVALID_HANDLE) bad++;
        if (graftlm_model_load(base, &m2) != GRAFTLM_OK) bad++;
        if (graftlm_generate(m2, PROMPT, &p, &r) != GRAFTLM_OK) bad++;
        graftlm_model_free(m2);
        if (graftlm_result_text(r) == NULL) bad++; /* a result outlives its model */
        graftlm_result_free(r);
        if (graftlm_result_text(r) != NULL) bad++;
        if (graftlm_generate(m2, PROMPT, &p, &r) != GRAFTLM_ERR_INVALID_HANDLE) bad++;
        pthread_mutex_lock(&lock);
        churns++;
        errors += bad;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : ".";
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    snprintf(base, sizeof base, "%s/tests/fixtures/models/llama/lit", root);
    snprintf(run, sizeof run, "%s/tests/fixtures/adapters/litgpt-lora-llama", root);
    if (graftlm_model_load(base, &model) != GRAFTLM_OK) { fprintf(stderr, "load: %s\n", graftlm_last_error()); return 1; }
    graftlm_adapter *a = NULL;
    if (graftlm_adapter_load(model, run, 4, NULL, &a) != GRAFTLM_OK) { fprintf(stderr, "adapter: %s\n", graftlm_last_error()); return 1; }
    /* Single-threaded references for every seed, in both states. */
    for (int i = 0; i < THREADS; i++) if (!run_one(i, without[i])) return 1;
    if (graftlm_model_attach(model, a, 1.0f, false) != GRAFTLM_OK) return 1;
    for (int i = 0; i < THREADS; i++) if (!run_one(i, with_adapter[i])) return 1;

    pthread_t th[THREADS], churner;
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&churner, NULL, churn, NULL);
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
    pthread_join(churner, NULL);
    graftlm_adapter_free(a);
    graftlm_model_free(model);
    printf("soak: %d generations on %d threads, %d adapter changes, %d refused re-entries, %d handle churns, "
           "%d mismatches, %d errors\n",
           runs, THREADS, changes, reentries, churns, mismatches, errors);
    return (mismatches || errors || runs < THREADS || reentries == 0 || churns == 0) ? 1 : 0;
}
