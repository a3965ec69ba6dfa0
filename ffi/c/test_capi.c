/* Exercises every function of the graftlm C API and its error paths. Run under AddressSanitizer
 * by .ci/run (ffi/run.sh). Expected token ids come from the LitGPT references in
 * examples/demo/reference.json and tests/fixtures/adapters/litgpt-lora-llama/step-000004/. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graftlm.h"

static int failures = 0;
#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s — ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, " (last error: %s)\n",                          \
                    graftlm_last_error() ? graftlm_last_error() : "none");  \
        }                                                                   \
    } while (0)
#define OK(call) CHECK((call) == GRAFTLM_OK, "%s", #call)

static const uint32_t DEMO_GREEDY[12] = {12, 320, 291, 268, 269, 73, 327, 545, 2, 199, 279, 445};
static const uint32_t LORA_STEP4_GREEDY[16] = {58, 378, 89, 301, 28, 365, 340, 54, 338, 67, 329, 54, 338, 67, 62, 379};
static const uint32_t BASE_GREEDY[16] = {383, 271, 330, 358, 278, 356, 298, 55, 72, 314, 329, 385, 90, 361, 398, 330};

static int same_ids(const graftlm_result *r, const uint32_t *want, size_t n) {
    size_t len = 0;
    const uint32_t *ids = graftlm_result_ids(r, &len);
    return ids && len == n && memcmp(ids, want, n * sizeof(uint32_t)) == 0;
}

struct counter { int pieces; size_t bytes; int stop_after; };
static bool on_piece(void *user_data, const char *piece, size_t len) {
    struct counter *c = user_data;
    if (strlen(piece) != len) return false;
    c->pieces++;
    c->bytes += len;
    return c->stop_after == 0 || c->pieces < c->stop_after;
}

/* Batch callback: counts pieces per request; request `stop_index` stops after `stop_after`. */
struct batch_counter { int pieces[3]; size_t stop_index; int stop_after; };
static bool on_batch_piece(void *user_data, size_t index, const char *piece, size_t len) {
    struct batch_counter *c = user_data;
    if (index >= 3 || strlen(piece) != len) return false;
    c->pieces[index]++;
    return !(index == c->stop_index && c->pieces[index] >= c->stop_after);
}

/* A callback that calls back into the model running it: calls that need the model's lock are
 * refused with GRAFTLM_ERR_BUSY (never a deadlock), the tokenizer still works. */
struct reenter { const graftlm_model *model; const graftlm_adapter *adapter; graftlm_session *session;
                 int calls, busy, other, tokenized; };
static bool on_piece_reenter(void *user_data, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    struct reenter *e = user_data;
    e->calls++;
    graftlm_gen_params p = graftlm_gen_params_default();
    p.max_new_tokens = 2;
    graftlm_result *r = NULL;
    graftlm_status s[3] = {
        graftlm_model_attach(e->model, e->adapter, 1.0f, false),
        graftlm_generate(e->model, "x", &p, &r),
        e->session ? graftlm_session_send(e->session, "x", &p, NULL, NULL, &r) : GRAFTLM_ERR_BUSY,
    };
    for (int i = 0; i < 3; i++) {
        if (s[i] == GRAFTLM_ERR_BUSY) e->busy++;
        else e->other++;
    }
    size_t n = 0;
    uint32_t ids[8];
    if (graftlm_tokenize(e->model, "ab", ids, 8, &n) == GRAFTLM_OK) e->tokenized++;
    return e->calls < 2;
}

struct job { const graftlm_model *model; int ok; };
/* Each thread has its own session on the shared model. */
static void *worker(void *arg) {
    struct job *j = arg;
    graftlm_gen_params p = graftlm_gen_params_default();
    p.temperature = 0.0f;
    p.max_new_tokens = 12;
    graftlm_result *r = NULL;
    graftlm_session *s = NULL;
    j->ok = graftlm_generate(j->model, "The Python interpreter", &p, &r) == GRAFTLM_OK && same_ids(r, DEMO_GREEDY, 12);
    graftlm_result_free(r);
    r = NULL;
    j->ok = j->ok && graftlm_session_new(j->model, &s) == GRAFTLM_OK &&
            graftlm_session_send(s, "Hello", &p, NULL, NULL, &r) == GRAFTLM_OK;
    graftlm_result_free(r);
    graftlm_session_free(s);
    return NULL;
}

/* Generations racing with adapter changes: each result is wholly base or wholly adapted. */
struct race { const graftlm_model *model; int ok; };
static void *racer(void *arg) {
    struct race *j = arg;
    graftlm_gen_params p = graftlm_gen_params_default();
    p.temperature = 0.0f;
    p.max_new_tokens = 16;
    p.raw = true;
    j->ok = 1;
    for (int i = 0; i < 6; i++) {
        graftlm_result *r = NULL;
        if (graftlm_generate(j->model, "The function returns a value", &p, &r) != GRAFTLM_OK ||
            !(same_ids(r, LORA_STEP4_GREEDY, 16) || same_ids(r, BASE_GREEDY, 16)))
            j->ok = 0;
        graftlm_result_free(r);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : ".";
    char demo[4096], base[4096], run[4096], out_dir[4096];
    snprintf(demo, sizeof demo, "%s/examples/demo/model", root);
    snprintf(base, sizeof base, "%s/tests/fixtures/models/llama/lit", root);
    snprintf(run, sizeof run, "%s/tests/fixtures/adapters/litgpt-lora-llama", root);
    snprintf(out_dir, sizeof out_dir, "%s", argc > 2 ? argv[2] : "/tmp/graftlm-c-export");

    /* Version and status strings. */
    CHECK(strlen(graftlm_version()) > 0, "version");
    CHECK(strcmp(graftlm_status_str(GRAFTLM_ERR_NOT_FOUND), "not found") == 0, "status_str");
    CHECK(strcmp(graftlm_status_str(12345), "unknown status") == 0, "status_str out of range");

    /* Threads: set before the first model loads; the pool then keeps its size. */
    CHECK(graftlm_set_threads(0) == GRAFTLM_ERR_INVALID_ARGUMENT, "0 threads refused");
    CHECK(graftlm_set_threads((size_t)-1) == GRAFTLM_ERR_INVALID_ARGUMENT, "SIZE_MAX refused");
    OK(graftlm_set_threads(2));
    CHECK(graftlm_threads() == 2, "threads %zu", graftlm_threads());
    OK(graftlm_set_threads(2));
    CHECK(graftlm_set_threads(3) == GRAFTLM_ERR_UNSUPPORTED, "resize refused");
    CHECK(strstr(graftlm_last_error(), "2 threads") != NULL, "error names the running size");

    /* Errors: NULLs, missing paths, outputs untouched on failure. */
    graftlm_model *model = (graftlm_model *)0x1;
    CHECK(graftlm_model_load(NULL, &model) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL path");
    CHECK(model == (graftlm_model *)0x1, "output written on failure");
    CHECK(graftlm_last_error() != NULL, "last error set");
    CHECK(graftlm_model_load("/no/such/model", &model) == GRAFTLM_ERR_NOT_FOUND, "missing dir");
    CHECK(strstr(graftlm_last_error(), "/no/such/model") != NULL, "error names the path");
    CHECK(graftlm_model_load(demo, NULL) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL out");

    CHECK(graftlm_model_load_with(demo, "int8", &model) == GRAFTLM_ERR_INVALID_ARGUMENT, "bad dtype");
    CHECK(strstr(graftlm_last_error(), "int8") != NULL, "error names the dtype");

    /* Weights held in bf16: half the memory, generates. */
    graftlm_model *half_model = NULL;
    OK(graftlm_model_load_with(demo, "bf16", &half_model));
    {
        graftlm_gen_params hp = graftlm_gen_params_default();
        hp.temperature = 0.0f;
        hp.max_new_tokens = 4;
        graftlm_result *hr = NULL;
        OK(graftlm_generate(half_model, "The Python interpreter", &hp, &hr));
        size_t n = 0;
        CHECK(graftlm_result_ids(hr, &n) != NULL && n == 4, "bf16 generated %zu", n);
        graftlm_result_free(hr);
    }
    graftlm_model_free(half_model);

    model = NULL;
    OK(graftlm_model_load_with(demo, NULL, &model));
    CHECK(graftlm_last_error() == NULL, "last error cleared by success");

    /* Tokenize / detokenize with the two-call buffer pattern. */
    size_t len = 0;
    uint32_t small[2];
    CHECK(graftlm_tokenize(model, "The Python interpreter", small, 2, &len) == GRAFTLM_ERR_BUFFER_TOO_SMALL, "small buffer");
    CHECK(len == 4, "needed length %zu", len);
    uint32_t ids[16];
    OK(graftlm_tokenize(model, "The Python interpreter", ids, 16, &len));
    CHECK(len == 4 && ids[0] == 341 && ids[3] == 311, "ids");
    char *text = NULL;
    OK(graftlm_detokenize(model, ids, len, &text));
    CHECK(text && strcmp(text, "The Python interpreter") == 0, "detokenize: %s", text ? text : "(null)");
    graftlm_string_free(text);
    CHECK(graftlm_detokenize(model, NULL, 3, &text) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL ids");

    /* Generation: greedy equals LitGPT; invalid params and UTF-8 are refused. */
    graftlm_gen_params p = graftlm_gen_params_default();
    CHECK(p.max_new_tokens == 50 && p.top_k == 50, "defaults");
    p.temperature = 0.0f;
    p.max_new_tokens = 12;
    graftlm_result *r = NULL;
    OK(graftlm_generate(model, "The Python interpreter", &p, &r));
    CHECK(same_ids(r, DEMO_GREEDY, 12), "demo greedy ids");
    CHECK(strncmp(graftlm_result_text(r), ", and in the", 12) == 0, "text: %s", graftlm_result_text(r));
    CHECK(strcmp(graftlm_result_stop_reason(r), "max_tokens") == 0, "stop reason");
    size_t plen = 0;
    CHECK(graftlm_result_prompt_ids(r, &plen) != NULL && plen == 4, "prompt ids");
    graftlm_result_free(r);

    graftlm_gen_params bad = p;
    bad.top_p = 1.5f;
    r = NULL;
    CHECK(graftlm_generate(model, "x", &bad, &r) == GRAFTLM_ERR_INVALID_ARGUMENT && r == NULL, "top_p");
    bad = p;
    bad.max_new_tokens = 0;
    CHECK(graftlm_generate(model, "x", &bad, &r) == GRAFTLM_ERR_INVALID_ARGUMENT, "zero tokens");
    bad = p;
    bad.max_new_tokens = 100000;
    CHECK(graftlm_generate(model, "x", &bad, &r) == GRAFTLM_ERR_CONTEXT_OVERFLOW, "overflow");
    CHECK(graftlm_generate(model, "\xff\xfe", &p, &r) == GRAFTLM_ERR_INVALID_ARGUMENT, "invalid UTF-8");
    CHECK(graftlm_generate(model, "x", NULL, &r) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL params");
    CHECK(graftlm_generate(NULL, "x", &p, &r) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL model");

    /* Streaming, and stopping from the callback. */
    struct counter c = {0, 0, 0};
    OK(graftlm_generate_stream(model, "The Python interpreter", &p, on_piece, &c, &r));
    CHECK(c.pieces > 0 && c.bytes == strlen(graftlm_result_text(r)), "streamed %d pieces, %zu bytes", c.pieces, c.bytes);
    graftlm_result_free(r);
    struct counter stop = {0, 0, 2};
    OK(graftlm_generate_stream(model, "The Python interpreter", &p, on_piece, &stop, &r));
    CHECK(stop.pieces == 2 && strcmp(graftlm_result_stop_reason(r), "callback") == 0, "callback stop");
    graftlm_result_free(r);
    CHECK(graftlm_generate_stream(model, "x", &p, NULL, NULL, &r) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL callback");

    /* Sessions keep a conversation. */
    graftlm_session *s = NULL;
    OK(graftlm_session_new(model, &s));
    p.max_new_tokens = 8;
    OK(graftlm_session_send(s, "Hello", &p, NULL, NULL, &r));
    graftlm_result_free(r);
    OK(graftlm_session_send(s, "And then?", &p, NULL, NULL, &r));
    plen = 0;
    graftlm_result_prompt_ids(r, &plen);
    CHECK(plen > 8, "second turn includes the first (%zu prompt ids)", plen);
    graftlm_result_free(r);
    OK(graftlm_session_reset(s));

    /* One model, several threads. */
    pthread_t th[4];
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].model = model;
        jobs[i].ok = 0;
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok, "thread %d", i);
    }
    graftlm_model_free(model); /* the session keeps it alive */
    OK(graftlm_session_send(s, "Still there?", &p, NULL, NULL, &r));
    graftlm_result_free(r);
    graftlm_session_free(s);

    /* Adapters on the tiny llama fixture. */
    OK(graftlm_model_load(base, &model));
    graftlm_adapter *a = NULL;
    CHECK(graftlm_adapter_load(model, run, 3, NULL, &a) == GRAFTLM_ERR_INVALID_ARGUMENT, "missing step");
    CHECK(graftlm_adapter_load(model, run, -2, NULL, &a) == GRAFTLM_ERR_INVALID_ARGUMENT, "bad step");
    OK(graftlm_adapter_load(model, run, 4, NULL, &a));
    CHECK(strcmp(graftlm_adapter_name(a), "litgpt-lora-llama/step-000004") == 0, "name %s", graftlm_adapter_name(a));
    OK(graftlm_model_attach(model, a, 1.0f, false));
    CHECK(graftlm_model_attach(model, a, 1.0f, false) == GRAFTLM_ERR_INVALID_ARGUMENT, "attach twice");
    size_t count = 0;
    OK(graftlm_model_adapter_count(model, &count));
    CHECK(count == 1, "count");
    p.raw = true;
    p.max_new_tokens = 16;
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    CHECK(same_ids(r, LORA_STEP4_GREEDY, 16), "adapter greedy (separate)");
    graftlm_result_free(r);
    OK(graftlm_model_merge(model, NULL));
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    CHECK(same_ids(r, LORA_STEP4_GREEDY, 16), "adapter greedy (merged)");
    graftlm_result_free(r);
    OK(graftlm_model_export_merged(model, out_dir));
    OK(graftlm_model_unmerge(model, "litgpt-lora-llama/step-000004"));
    OK(graftlm_model_set_scale(model, "litgpt-lora-llama/step-000004", 0.0f));
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    CHECK(same_ids(r, BASE_GREEDY, 16), "scale 0 is the base");
    graftlm_result_free(r);
    OK(graftlm_model_set_scale(model, "litgpt-lora-llama/step-000004", 1.0f));
    OK(graftlm_model_activate(model, "litgpt-lora-llama/step-000004", false));
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    CHECK(same_ids(r, BASE_GREEDY, 16), "inactive is the base");
    graftlm_result_free(r);
    /* Toggle the adapter while three threads generate. */
    pthread_t rt[3];
    struct race races[3];
    for (int i = 0; i < 3; i++) {
        races[i].model = model;
        pthread_create(&rt[i], NULL, racer, &races[i]);
    }
    for (int i = 0; i < 20; i++) {
        OK(graftlm_model_activate(model, "litgpt-lora-llama/step-000004", i % 2 == 0));
        OK(graftlm_model_set_scale(model, "litgpt-lora-llama/step-000004", 1.0f));
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(rt[i], NULL);
        CHECK(races[i].ok, "racing thread %d saw a mixed result", i);
    }
    /* A batch, each request with its own adapter (or none): each as if generated alone. */
    graftlm_batch_request reqs[3] = {
        {"The function returns a value", NULL},
        {"The function returns a value", "litgpt-lora-llama/step-000004"},
        {"The function returns a value", NULL},
    };
    graftlm_result *rs[3] = {NULL, NULL, NULL};
    struct batch_counter bc = {{0, 0, 0}, 2, 3};
    OK(graftlm_generate_batch(model, reqs, 3, &p, on_batch_piece, &bc, rs));
    CHECK(same_ids(rs[0], BASE_GREEDY, 16), "batch: base");
    CHECK(same_ids(rs[1], LORA_STEP4_GREEDY, 16), "batch: adapter");
    CHECK(bc.pieces[0] > 3 && bc.pieces[1] > 3, "batch: streamed %d %d", bc.pieces[0], bc.pieces[1]);
    CHECK(bc.pieces[2] == 3 && strcmp(graftlm_result_stop_reason(rs[2]), "callback") == 0,
          "batch: request 2 stopped by its callback (%d pieces)", bc.pieces[2]);
    CHECK(strcmp(graftlm_result_stop_reason(rs[0]), "max_tokens") == 0, "batch: others go on");
    for (int i = 0; i < 3; i++) graftlm_result_free(rs[i]);
    OK(graftlm_generate_batch(model, reqs, 3, &p, NULL, NULL, rs));
    CHECK(same_ids(rs[2], BASE_GREEDY, 16), "batch without a callback");
    for (int i = 0; i < 3; i++) graftlm_result_free(rs[i]);
    reqs[1].adapter = "nope";
    rs[0] = NULL;
    CHECK(graftlm_generate_batch(model, reqs, 3, &p, NULL, NULL, rs) == GRAFTLM_ERR_INVALID_ARGUMENT && rs[0] == NULL,
          "batch: unknown adapter, nothing written");
    CHECK(graftlm_generate_batch(model, reqs, 0, &p, NULL, NULL, rs) == GRAFTLM_ERR_INVALID_ARGUMENT, "empty batch");
    CHECK(graftlm_generate_batch(model, NULL, 1, &p, NULL, NULL, rs) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL requests");
    reqs[1].prompt = NULL;
    reqs[1].adapter = NULL;
    CHECK(graftlm_generate_batch(model, reqs, 3, &p, NULL, NULL, rs) == GRAFTLM_ERR_INVALID_ARGUMENT, "NULL prompt");
    CHECK(graftlm_model_detach(model, "nope") == GRAFTLM_ERR_INVALID_ARGUMENT, "detach unknown");
    OK(graftlm_model_detach(model, "litgpt-lora-llama/step-000004"));
    graftlm_adapter_free(a);
    graftlm_model_free(model);

    /* The exported merged checkpoint loads and gives the adapter's tokens. */
    OK(graftlm_model_load(out_dir, &model));
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    CHECK(same_ids(r, LORA_STEP4_GREEDY, 16), "exported merged model");
    graftlm_result_free(r);
    graftlm_model_free(model);

    /* Misuse: freed, freed twice, wrong-kind and made-up handles are refused, never undefined. */
    OK(graftlm_model_load(base, &model));
    OK(graftlm_adapter_load(model, run, 4, NULL, &a));
    graftlm_model *stale = model;
    graftlm_adapter *stale_a = a;
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    graftlm_result *stale_r = r;
    graftlm_result_free(r);
    graftlm_result_free(stale_r); /* twice: ignored */
    CHECK(graftlm_result_text(stale_r) == NULL && graftlm_result_stop_reason(stale_r) == NULL, "freed result");
    len = 99;
    CHECK(graftlm_result_ids(stale_r, &len) == NULL && len == 99, "freed result ids");
    graftlm_adapter_free(a);
    graftlm_adapter_free(stale_a); /* twice: ignored */
    CHECK(graftlm_model_attach(model, stale_a, 1.0f, false) == GRAFTLM_ERR_INVALID_HANDLE, "freed adapter attach");
    CHECK(graftlm_adapter_name(stale_a) == NULL, "freed adapter name");
    CHECK(graftlm_generate((const graftlm_model *)stale_a, "x", &p, &r) == GRAFTLM_ERR_INVALID_HANDLE,
          "adapter passed as a model");
    CHECK(graftlm_generate((const graftlm_model *)(uintptr_t)0x1234567, "x", &p, &r) == GRAFTLM_ERR_INVALID_HANDLE,
          "made-up model");
    CHECK(strcmp(graftlm_status_str(GRAFTLM_ERR_INVALID_HANDLE), "invalid handle") == 0, "status string");
    /* Empty text with no buffer: defined (the needed length, or 0). */
    len = 99;
    graftlm_status ts = graftlm_tokenize(model, "", NULL, 0, &len);
    CHECK((ts == GRAFTLM_OK && len == 0) || (ts == GRAFTLM_ERR_BUFFER_TOO_SMALL && len > 0), "empty text, NULL ids");
    /* A callback that re-enters: refused with BUSY, nothing deadlocks, the generation completes. */
    OK(graftlm_adapter_load(model, run, 4, NULL, &a));
    OK(graftlm_session_new(model, &s));
    struct reenter e = {model, a, s, 0, 0, 0, 0};
    p.max_new_tokens = 6;
    OK(graftlm_generate_stream(model, "The function returns a value", &p, on_piece_reenter, &e, &r));
    CHECK(e.calls == 2 && e.busy == 6 && e.other == 0 && e.tokenized == 2, "re-entry: %d calls, %d busy, %d other",
          e.calls, e.busy, e.other);
    CHECK(strcmp(graftlm_result_stop_reason(r), "callback") == 0, "stopped by the callback");
    graftlm_result_free(r);
    /* ... and from a session's own callback: the session itself is busy. */
    struct reenter e2 = {model, a, s, 0, 0, 0, 0};
    OK(graftlm_session_send(s, "Hello", &p, on_piece_reenter, &e2, &r));
    CHECK(e2.busy == 6 && e2.other == 0, "session re-entry: %d busy, %d other", e2.busy, e2.other);
    graftlm_result_free(r);
    count = 99;
    OK(graftlm_model_adapter_count(model, &count));
    CHECK(count == 0, "nothing was attached from the callback");
    graftlm_session_free(s);
    /* Exports never harm an input, refuse a non-empty directory unless forced. */
    CHECK(graftlm_model_export_merged(model, base) == GRAFTLM_ERR_INVALID_ARGUMENT, "export onto the base");
    CHECK(graftlm_model_export_merged(model, out_dir) == GRAFTLM_ERR_INVALID_ARGUMENT, "export into a full dir");
    CHECK(strstr(graftlm_last_error(), "not empty") != NULL, "says why: %s", graftlm_last_error());
    CHECK(graftlm_model_export_merged_with(model, out_dir, 0x80) == GRAFTLM_ERR_INVALID_ARGUMENT, "unknown flag");
    OK(graftlm_model_attach(model, a, 1.0f, false));
    OK(graftlm_model_export_merged_with(model, out_dir, GRAFTLM_EXPORT_FORCE));
    CHECK(graftlm_model_set_scale(model, "litgpt-lora-llama/step-000004", 1e30f) == GRAFTLM_ERR_INVALID_ARGUMENT,
          "a scale whose merge cannot be undone");
    graftlm_adapter_free(a);
    graftlm_model_free(model);
    graftlm_model_free(stale); /* twice: ignored */
    CHECK(graftlm_generate(stale, "x", &p, &r) == GRAFTLM_ERR_INVALID_HANDLE, "freed model");
    CHECK(graftlm_session_new(stale, &s) == GRAFTLM_ERR_INVALID_HANDLE, "session on a freed model");
    CHECK(graftlm_session_send(s, "x", &p, NULL, NULL, &r) == GRAFTLM_ERR_INVALID_HANDLE, "freed session");
    /* The base survived everything above. */
    OK(graftlm_model_load(base, &model));
    OK(graftlm_generate(model, "The function returns a value", &p, &r));
    graftlm_result_free(r);
    graftlm_model_free(model);

    /* NULL frees are no-ops. */
    graftlm_model_free(NULL);
    graftlm_adapter_free(NULL);
    graftlm_result_free(NULL);
    graftlm_session_free(NULL);
    graftlm_string_free(NULL);

    if (failures) {
        fprintf(stderr, "%d failed\n", failures);
        return 1;
    }
    printf("C API: all checks passed\n");
    return 0;
}
