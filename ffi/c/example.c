/* Load a model, optionally attach an adapter, stream a generation.
 * usage: example CHECKPOINT_DIR [ADAPTER_PATH] [PROMPT] */
#include <stdio.h>

#include "graftlm.h"

static bool print_piece(void *user_data, const char *piece, size_t len) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, graftlm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CHECKPOINT_DIR [ADAPTER_PATH] [PROMPT]\n", argv[0]);
        return 2;
    }
    graftlm_model *model = NULL;
    if (graftlm_model_load(argv[1], &model) != GRAFTLM_OK) return fail("load");
    if (argc > 2 && argv[2][0]) {
        graftlm_adapter *adapter = NULL;
        if (graftlm_adapter_load(model, argv[2], -1, NULL, &adapter) != GRAFTLM_OK) return fail("adapter");
        if (graftlm_model_attach(model, adapter, 1.0f, false) != GRAFTLM_OK) return fail("attach");
        graftlm_adapter_free(adapter);
    }
    graftlm_gen_params params = graftlm_gen_params_default();
    params.temperature = 0.0f;
    params.max_new_tokens = 40;
    graftlm_result *result = NULL;
    const char *prompt = argc > 3 ? argv[3] : "The Python interpreter";
    printf("%s", prompt);
    if (graftlm_generate_stream(model, prompt, &params, print_piece, NULL, &result) != GRAFTLM_OK)
        return fail("generate");
    size_t n = 0;
    graftlm_result_ids(result, &n);
    printf("\n[%zu tokens, stop: %s]\n", n, graftlm_result_stop_reason(result));
    graftlm_result_free(result);
    graftlm_model_free(model);
    return 0;
}
