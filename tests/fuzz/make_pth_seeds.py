"""Writes structure-aware seeds for the pth fuzz target into tests/fuzz/seeds/pth-deep/.

    python3 tests/fuzz/make_pth_seeds.py

Each seed is a small torch-style zip (`archive/data.pkl`, `archive/data/0`, `archive/version`,
`archive/byteorder`; entries stored, as the loader requires) whose state dict holds one real
tensor `w` next to a hostile structure: nesting far past the pickle parser's depth limit (lists,
tuples, dicts), nesting exactly at the limit (accepted), memo doubling and copy-on-write chains,
and a DAG of shared dicts that would flatten into 2^40 entries. libFuzzer mutates these instead
of having to grow such shapes byte by byte. Standard library only; the output is deterministic.
"""
import pathlib
import struct
import zipfile

OUT = pathlib.Path(__file__).parent / "seeds" / "pth-deep"
DEEP = 1000  # four times the parser's limit of 256, yet a few KB of pickle
LIMIT = 256  # the parser's MAX_DEPTH


def s(text):
    """BINUNICODE."""
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def tensor(key="0"):
    """_rebuild_tensor_v2(("storage", FloatStorage, key, "cpu", 6), 0, (2, 3), (3, 1), False,
    OrderedDict()), as torch.save writes it (protocol 2)."""
    return (b"ctorch._utils\n_rebuild_tensor_v2\n((" + s("storage") + b"ctorch\nFloatStorage\n"
            + s(key) + s("cpu") + b"K\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89"
            + b"ccollections\nOrderedDict\n)RtR")


def state_dict(key, value):
    """{"w": tensor, key: value}: the value is pickle text leaving one value on the stack."""
    return b"\x80\x02}q\x00(" + s("w") + tensor() + s(key) + value + b"u."


def nested_dicts(n):
    """{"a": {"a": ... {"a": tensor}}}, n dicts deep."""
    return (b"}" + s("a")) * n + tensor() + b"s" * n


def shared_dict_dag(levels):
    """D0 = {"a": t, "b": t}; D(k+1) = {"a": Dk, "b": Dk}: 2^(levels+1) tensors when flattened.
    Each Dk is built inline as D(k+1)'s "a" and then memoized for its "b", so that only the top
    dict is left on the stack."""
    leaf = b"}(" + s("a") + tensor() + b"q\x02" + s("b") + b"h\x02u"
    return (b"}(" + s("a")) * levels + leaf + (b"q\x01" + s("b") + b"h\x01u") * levels


SEEDS = {
    # Nesting built by APPEND, by MARK ... TUPLE and by SETITEM.
    "deep-lists": state_dict("deep", b"]" * DEEP + b"a" * (DEEP - 1)),
    "deep-tuples": state_dict("deep", b"(" * DEEP + b"t" * DEEP),
    "deep-dicts": state_dict("deep", b"}" + b"K\x01}" * DEEP + b"s" * DEEP),
    # Each new list holds the previous one, fetched from the memo.
    # (Wrapped in a tuple, as each step leaves its list on the stack.)
    "deep-memo-chain": state_dict("deep", b"(]q\x01" + b"]h\x01aq\x01" * DEEP + b"t"),
    # Accepted: the tensor sits LIMIT dicts down, counting the top one.
    "at-depth-limit": state_dict("deep", nested_dicts(LIMIT - 1)),
    # 40 doublings (2^40 elements if copied) and a memoized list grown 500 times (quadratic if
    # copied), in one tuple since both leave their steps on the stack.
    "memo-doubling": state_dict(
        "doubled",
        b"(]q\x01" + b"](h\x01h\x01eq\x01" * 40 + b"]q\x02" + b"h\x02K\x01aq\x02" * 500 + b"t",
    ),
    "shared-dict-dag": state_dict("dag", shared_dict_dag(40)),
}


def write(path, pickle):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in [
            ("archive/data.pkl", pickle),
            ("archive/byteorder", b"little"),
            ("archive/data/0", struct.pack("<6f", 0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
            ("archive/version", b"3\n"),
        ]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data, compress_type=zipfile.ZIP_STORED)


if __name__ == "__main__":
    for name, pickle in SEEDS.items():
        p = OUT / f"{name}.pth"
        write(p, pickle)
        print(f"{p}: {p.stat().st_size} bytes")
