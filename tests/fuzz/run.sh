#!/usr/bin/env bash
# Runs graftlm's fuzz targets with cargo-fuzz (libFuzzer + AddressSanitizer).
#
#   bash tests/fuzz/run.sh              # every target, 10 s each (what .ci/run does)
#   bash tests/fuzz/run.sh 3600 pth     # one target for an hour (the long run)
#
# Works on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the -Z sanitizer flags cargo-fuzz
# passes) and installs cargo-fuzz from crates.io if it is missing. Corpora grow under
# $CARGO_TARGET_DIR/fuzz-corpus, seeded from the committed fixtures; a crash leaves its input in
# tests/fuzz/artifacts/<target>/ and fails the run. Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graftlm/target}-fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2

# target -> seed files (relative to tests/)
declare -A seeds=(
    [safetensors]="fuzz/seeds/tiny-hf/model.safetensors fixtures/adapters/peft-llama-qv/adapter_model.safetensors"
    [pth]="fuzz/seeds/tiny-lit/lit_model.pth fixtures/adapters/litgpt-lora-llama/step-000002/lit_model.pth.lora fixtures/adapters/litgpt-adapter-v2-llama/final/lit_model.pth.adapter_v2
        fuzz/seeds/pth-deep/deep-lists.pth fuzz/seeds/pth-deep/deep-tuples.pth fuzz/seeds/pth-deep/deep-dicts.pth
        fuzz/seeds/pth-deep/deep-memo-chain.pth fuzz/seeds/pth-deep/at-depth-limit.pth
        fuzz/seeds/pth-deep/memo-doubling.pth fuzz/seeds/pth-deep/shared-dict-dag.pth"
    [config_json]="fuzz/seeds/tiny-hf/config.json fixtures/models/gemma2/hf/config.json fixtures/models/phi3/hf/config.json fixtures/models/gptneox/hf/config.json"
    [model_config_yaml]="fuzz/seeds/tiny-lit/model_config.yaml fixtures/models/gemma2/lit/model_config.yaml"
    [hyperparameters_yaml]="fixtures/adapters/litgpt-lora-llama/step-000002/hyperparameters.yaml"
    [adapter_config_json]="fixtures/adapters/peft-llama-qv/adapter_config.json fixtures/adapters/peft-phi2-regex/adapter_config.json fixtures/adapters/peft-phi2-layers/adapter_config.json"
    [prompt_style_yaml]="fixtures/adapters/litgpt-lora-llama/step-000002/prompt_style.yaml"
    [tokenizer]="@fixtures/models/llama/lit/tokenizer.json @@fixtures/models/llama/lit/tokenizer_config.json"
    [safetensors_index]="fixtures/models/llama/hf/model.safetensors.index.json"
)
# target -> -max_len (default 64 KiB). The pth target gets 1 MiB so that mutations can reach
# pickles nested past the parser's depth limit or large enough to test its work budget.
declare -A max_len=([pth]=1048576)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors pth config_json model_config_yaml hyperparameters_yaml
    adapter_config_json prompt_style_yaml tokenizer safetensors_index)

[ -n "${FUZZ_BIN:-}" ] || cargo fuzz build --fuzz-dir . # FUZZ_BIN: run prebuilt binaries from there
summary=()
failed=()
for t in "${targets[@]}"; do
    corpus="$CARGO_TARGET_DIR/fuzz-corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    for s in ${seeds[$t]}; do
        case "$s" in # the tokenizer target's first byte picks the file: even = tokenizer.json
            @@*) { printf '\001'; cat "../${s#@@}"; } >"$corpus/seed-config" ;;
            @*) { printf '\000'; cat "../${s#@}"; } >"$corpus/seed-json" ;;
            *) cp "../$s" "$corpus/seed-$(basename "$(dirname "$s")")-$(basename "$s")" ;;
        esac
    done
    log="$CARGO_TARGET_DIR/fuzz-$t.log"
    echo "== fuzz $t (${secs}s)"
    if ! "${FUZZ_BIN:-$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release}/$t" "$corpus" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len="${max_len[$t]:-65536}" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        grep -A8 "panicked at\|ERROR: \|SUMMARY" "$log" | head -40
        echo "fuzz target $t FAILED: input kept in tests/fuzz/artifacts/$t/ (log: $log)" >&2
        failed+=("$t")
        continue
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    summary+=("$(printf '%-22s %10s execs  %s  corpus %s' "$t" "$runs" "$cov" "$(ls "$corpus" | wc -l)")")
done
printf '%s\n' "== fuzz summary (${secs}s per target)" "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]}" >&2
    exit 1
fi
