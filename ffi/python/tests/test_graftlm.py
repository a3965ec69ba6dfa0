"""Tests of the Python bindings (run by .ci/run through ffi/run.sh)."""
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import graftlm

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "examples/demo/model"
REF = json.loads((ROOT / "examples/demo/reference.json").read_text())
RUN = ROOT / "tests/fixtures/adapters/litgpt-lora-llama"
LLAMA = ROOT / "tests/fixtures/models/llama/lit"


@pytest.fixture(scope="module")
def demo():
    with graftlm.Model.load(DEMO) as m:
        yield m


def test_greedy_matches_litgpt(demo):
    n = len(REF["greedy_new_ids"])
    r = demo.generate(REF["prompt"], max_new_tokens=n, temperature=0)
    assert r.ids == REF["greedy_new_ids"]
    assert r.prompt_ids == REF["prompt_ids"]
    assert r.text == REF["greedy_text"]
    assert r.stop_reason == "max_tokens"


def test_streaming_pieces_make_the_text(demo):
    pieces = list(demo.generate(REF["prompt"], max_new_tokens=20, temperature=0, stream=True))
    assert len(pieces) > 1
    assert "".join(pieces) == demo.generate(REF["prompt"], max_new_tokens=20, temperature=0).text


def test_stopping_a_stream_early(demo):
    gen = demo.generate(REF["prompt"], max_new_tokens=40, temperature=0, stream=True)
    first = next(gen)
    gen.close()
    assert first


def test_tokenize_roundtrip(demo):
    ids = demo.tokenize("The Python interpreter")
    assert ids == REF["prompt_ids"]
    assert demo.detokenize(ids) == "The Python interpreter"


def test_errors_carry_the_message():
    with pytest.raises(graftlm.GraftlmError) as e:
        graftlm.Model.load("/no/such/model")
    assert e.value.status == 2
    assert "/no/such/model" in e.value.message


def test_weight_dtype():
    with graftlm.Model.load(DEMO, weight_dtype="f32") as m:
        n = len(REF["greedy_new_ids"])
        assert m.generate(REF["prompt"], max_new_tokens=n, temperature=0).ids == REF["greedy_new_ids"]
    with graftlm.Model.load(DEMO, weight_dtype="bf16") as m:
        assert len(m.generate(REF["prompt"], max_new_tokens=4, temperature=0).ids) == 4
    with pytest.raises(graftlm.GraftlmError) as e:
        graftlm.Model.load(DEMO, weight_dtype="int8")
    assert "int8" in e.value.message


def test_bad_parameters(demo):
    with pytest.raises(graftlm.GraftlmError) as e:
        demo.generate("x", top_p=1.5)
    assert "top_p" in e.value.message
    with pytest.raises(graftlm.GraftlmError):
        demo.generate("x", max_new_tokens=100000)


def test_thread_pool_on_one_model(demo):
    n = len(REF["greedy_new_ids"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda _: demo.generate(REF["prompt"], max_new_tokens=n, temperature=0).ids, range(8)))
    assert all(o == REF["greedy_new_ids"] for o in outs)
    sampled = list(ThreadPoolExecutor(4).map(lambda s: demo.generate(REF["prompt"], max_new_tokens=10, seed=s).ids, [7, 7, 7]))
    assert sampled[0] == sampled[1] == sampled[2]


def test_threads():
    n = graftlm.threads()
    assert n >= 1
    graftlm.set_threads(n)  # the size the pool runs: accepted
    with pytest.raises(graftlm.GraftlmError) as e:
        graftlm.set_threads(n + 1)
    assert e.value.status == 4 and f"{n} threads" in e.value.message
    for bad in (0, -1, 2**64 + 2, 100000):
        with pytest.raises(graftlm.GraftlmError) as e:
            graftlm.set_threads(bad)
        assert e.value.status == 1
    with pytest.raises(TypeError):
        graftlm.set_threads(2.0)


def test_adapters_attach_switch_merge(tmp_path):
    ref = json.loads((RUN / "step-000004/reference.json").read_text())
    base = json.loads((ROOT / "tests/fixtures/models/llama/reference.json").read_text())
    with graftlm.Model.load(LLAMA) as m:
        name = m.attach(RUN, step=4)
        assert name == "litgpt-lora-llama/step-000004"
        gen = lambda: m.generate(ref["prompt"], max_new_tokens=16, temperature=0, raw=True).ids
        assert gen() == ref["greedy_new_ids"]
        m.merge()
        assert gen() == ref["greedy_new_ids"]
        m.export_merged(tmp_path / "merged")
        m.unmerge()
        m.activate(name, False)
        assert gen() == base["greedy_new_ids"]
        m.activate(name, True)
        m.set_scale(name, 0.0)
        assert gen() == base["greedy_new_ids"]
        m.detach(name)
        with pytest.raises(graftlm.GraftlmError):
            m.detach(name)
    with graftlm.Model.load(tmp_path / "merged") as merged:
        assert merged.generate(ref["prompt"], max_new_tokens=16, temperature=0, raw=True).ids == ref["greedy_new_ids"]


def test_generate_batch_each_with_its_adapter():
    ref = json.loads((RUN / "step-000004/reference.json").read_text())
    base = json.loads((ROOT / "tests/fixtures/models/llama/reference.json").read_text())
    with graftlm.Model.load(LLAMA) as m:
        name = m.attach(RUN, step=4)
        m.activate(name, False)  # per-request choice, whatever the model-wide state
        pieces = {0: [], 1: [], 2: []}

        def on_text(i, piece):
            pieces[i].append(piece)
            return not (i == 2 and len(pieces[2]) >= 2)

        prompts = [ref["prompt"]] * 3
        rs = m.generate_batch(prompts, [None, name, name], max_new_tokens=16, temperature=0, raw=True,
                              on_text=on_text)
        assert rs[0].ids == base["greedy_new_ids"]
        assert rs[1].ids == ref["greedy_new_ids"]
        assert "".join(pieces[1]) == rs[1].text
        assert rs[2].stop_reason == "callback" and len(pieces[2]) == 2
        assert rs[0].stop_reason == "max_tokens"
        with pytest.raises(graftlm.GraftlmError):
            m.generate_batch(prompts, [None, "nope", None], max_new_tokens=4)
        with pytest.raises(ValueError):
            m.generate_batch(prompts, [None], max_new_tokens=4)


def test_close_while_other_threads_generate():
    """close() while other threads are inside calls: they finish or raise, the interpreter lives."""
    m = graftlm.Model.load(DEMO)
    statuses = []
    running = threading.Event()

    def work():
        for _ in range(20):
            try:
                m.generate(REF["prompt"], max_new_tokens=8, temperature=0)
                running.set()
            except graftlm.GraftlmError as e:
                statuses.append(e.status)

    with ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(work) for _ in range(4)]
        assert running.wait(60)  # generations are under way on the other threads
        m.close()
        for f in futures:
            f.result()
    assert set(statuses) <= {1, 11}, statuses
    with pytest.raises(graftlm.GraftlmError):
        m.generate("x")
    m.close()  # twice: fine


def test_a_callback_calling_back_into_its_model_gets_busy():
    with graftlm.Model.load(LLAMA) as m:
        name = m.attach(RUN, step=4)
        with pytest.raises(graftlm.GraftlmError) as e:
            m.generate_batch(["The function"], [None], max_new_tokens=4, on_text=lambda i, piece: m.detach(name))
        assert e.value.status == 12
        assert m.tokenize("ab")  # the model is fine afterwards
        m.detach(name)


def test_export_never_harms_an_input_and_needs_force_to_replace(tmp_path):
    with graftlm.Model.load(LLAMA) as m:
        m.attach(RUN, step=4)
        for bad in [LLAMA, LLAMA / "sub", LLAMA.parent]:
            with pytest.raises(graftlm.GraftlmError) as e:
                m.export_merged(bad, force=True)
            assert e.value.status == 1 and "input" in e.value.message
        out = tmp_path / "merged"
        m.export_merged(out)
        with pytest.raises(graftlm.GraftlmError) as e:
            m.export_merged(out)
        assert "not empty" in e.value.message
        m.export_merged(out, force=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    with graftlm.Model.load(LLAMA) as base:  # still loads
        assert base.generate("x", max_new_tokens=2).ids
