"""Fuzzing with hypothesis: random configs and malformed data files give a valid result or a clear
:class:`~genlab.errors.GenlabError`, never another exception; through the CLI, exit status 0 or 2
and a one-line message, never a traceback or an "internal error" (exit 1).

Bounded for CI: every property has a fixed ``max_examples``; training runs are 1-3 steps on a few
dozen points with a tiny network. The whole file takes well under a minute on one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import math
import os
import pathlib
import tempfile
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from genlab.cli import main
from genlab.config import Config, DataConfig, EvalConfig, TrainerConfig, from_dict
from genlab.config import load as load_config
from genlab.data import PATH_LOADERS, Dataset
from genlab.data import load as load_data
from genlab.errors import ConfigError, DataError
from genlab.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "flow-matching-moons.yaml"
FAMILIES = sorted(e.name for e in MODELS)
DATASET_NAMES = sorted(e.name for e in DATASETS)


def fuzz(max_examples: int) -> settings:
    """Bounded: a fixed number of examples, no per-example deadline (the first run imports).
    The examples are the same on every run (``derandomize``), so the suite cannot fail on one
    machine and pass on the next; ``GENLAB_FUZZ_RANDOM=1`` draws new ones, to hunt for bugs."""
    fixed = not os.environ.get("GENLAB_FUZZ_RANDOM")
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=fixed,
        **({"database": None} if fixed else {}),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Every run through the CLI ends with these (later overrides win): tiny and quiet.
TINY = [
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",  # never more threads than the test process may use
]


@contextlib.contextmanager
def scratch():
    """A temporary directory that is also the working directory (relative paths land there)."""
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        yield Path(d)


def note(text: str) -> None:
    """Tally an outcome in hypothesis' statistics (pytest --hypothesis-show-statistics)."""
    with contextlib.suppress(InvalidArgument):  # outside a @given test
        event(text)


def run_cli(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, err: str) -> None:
    """Exit 0, or exit 2 with one line ``genlab <cmd>: error: ...``; no traceback, no exit 1."""
    note(f"exit {code}" + (f": {err.split(':')[2].strip()[:30]}" if code == 2 else ""))
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ": error: " in lines[0], err


# --------------------------------------------------------------------------------------------------
# Random values and configs
# --------------------------------------------------------------------------------------------------

WORDS = [
    "",
    " ",
    "auto",
    "cpu",
    "cpu:1",
    "cuda",
    "cuda:0",
    "mps",
    "meta",
    "hpu",
    "xla",
    "cosine",
    "constant",
    "fp32",
    "bf16",
    "fp16",
    "ot",
    "independent",
    "uniform",
    "logit-normal",
    "mlp",
    "unet",
    "euler",
    "midpoint",
    "dopri5",
    "w2",
    "mmd",
    "nan",
    ".inf",
    "1e-3",
    "1e400",
    "null",
    "true",
    "~",
    "x.npy",
    "/no/such/file.csv",
    *DATASET_NAMES,
    *FAMILIES,
]
HUGE_INTS = [10**30, -(10**30), 2**63, 2**64, 2**32, -(2**63) - 1, 10**400]
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e308, -1e308, 1e-320, 0.5, -0.0, 1e39, 0.999, 1.0]
)
INTS = st.integers(-3, 300) | st.sampled_from(HUGE_INTS)
STRINGS = st.sampled_from(WORDS) | st.text(max_size=8)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | STRINGS
DICT_KEYS = STRINGS | st.integers(-2, 2) | st.none() | st.booleans()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(DICT_KEYS, inner, max_size=3),
    max_leaves=6,
)


def mostly(common: st.SearchStrategy, *rare: st.SearchStrategy) -> st.SearchStrategy:
    """``common`` about 11 times in 12, else one of ``rare``."""
    return st.integers(0, 11).flatmap(lambda i: common if i else st.one_of(*rare))


def typo_of(names: list[str]) -> st.SearchStrategy[str]:
    """A valid name, a near miss of one (a character dropped, doubled or upper-cased) or noise."""

    def mangle(t: tuple[str, int, int]) -> str:
        name, i, how = t
        i %= max(len(name), 1)
        return [
            name[:i] + name[i + 1 :],
            name[:i] + name[i : i + 1] * 2 + name[i + 1 :],
            name.upper(),
            name.replace("_", "-"),
        ][how]

    valid = st.sampled_from(names)
    near = st.tuples(valid, st.integers(0, 30), st.integers(0, 3)).map(mangle)
    return mostly(valid, near, st.text(max_size=6))


def value_for(tp: typing.Any) -> st.SearchStrategy[typing.Any]:
    """Random values, biased towards ones of the field's type (so validation is passed often)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        typed = st.sampled_from(args)
    elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        typed = st.one_of([value_for(a) for a in args if a is not type(None)] + [st.none()])
    elif tp is bool:
        typed = st.booleans()
    elif tp is int:
        typed = st.integers(0, 5) | INTS
    elif tp is float:
        typed = FLOATS | st.floats(0, 1)
    elif tp is str:
        typed = STRINGS
    elif origin is tuple:
        typed = st.lists(FLOATS | st.floats(0, 1), min_size=len(args), max_size=len(args))
    elif tp is list or origin is list:
        typed = st.lists(STRINGS | SCALARS, max_size=3)
    elif tp is dict or origin is dict:
        typed = st.dictionaries(DICT_KEYS, VALUES, max_size=3)
    else:
        typed = VALUES
    return mostly(typed, VALUES)


SECTIONS = {"data": DataConfig, "trainer": TrainerConfig, "eval": EvalConfig}


@st.composite
def section(draw: st.DrawFn, name: str) -> typing.Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(VALUES)  # not a mapping at all
    out: dict[typing.Any, typing.Any] = {}
    if name == "model":
        family = draw(typo_of(FAMILIES) | VALUES) if draw(st.booleans()) else "flow-matching"
        if draw(st.integers(0, 3)):
            out["family"] = family
        cls = MODELS.get(family).Config if family in FAMILIES else MODELS.get(FAMILIES[0]).Config
    else:
        cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    for key in draw(st.lists(typo_of(sorted(hints)), max_size=4)):
        out[key] = draw(value_for(hints.get(key, typing.Any)))
    return out


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[typing.Any, typing.Any]:
    top = ["name", "data", "model", "trainer", "eval"]
    names = draw(st.sets(st.sampled_from(top)))
    if draw(st.integers(0, 7)) == 0:
        names.add(draw(typo_of(top)))
    raw: dict[typing.Any, typing.Any] = {}
    for key in names:
        if key == "name":
            raw[key] = draw(mostly(st.text(min_size=1, max_size=8), VALUES))
        elif key in ("data", "model", "trainer", "eval"):
            raw[key] = draw(section(key))
        else:
            raw[key] = draw(VALUES)
    return raw


def dotted_keys() -> st.SearchStrategy[str]:
    paths = [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
    for fam in FAMILIES:
        paths += [f"model.{f.name}" for f in dataclasses.fields(MODELS.get(fam).Config)]
    paths += ["name", "model.family", "data.options.noise", "data.options.key", "data"]
    return typo_of(sorted(set(paths)))


def as_yaml_text(value: typing.Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
    )


OVERRIDES = st.lists(
    mostly(
        st.tuples(dotted_keys(), VALUES.map(as_yaml_text)).map("=".join),
        st.tuples(dotted_keys(), st.text(max_size=10)).map("=".join),
        st.text(max_size=12),  # often no '=' at all
    ),
    max_size=3,
)


def check_config(make: typing.Callable[[], Config]) -> Config | None:
    """``make()`` gives a valid Config (whose saved YAML reloads to the same config) or a
    ConfigError with a one-line message; anything else propagates and fails the test."""
    try:
        cfg = make()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))  # the CLI prints it as one line
        note("ConfigError")
        return None
    note("valid")
    assert isinstance(cfg, Config)
    again = from_dict(yaml.safe_load(cfg.to_yaml()))  # what --resume and load_run read back
    assert again.to_yaml() == cfg.to_yaml()
    return cfg


# --- 1. configs -----------------------------------------------------------------------------------


@fuzz(300)
@given(raw=raw_configs())
@example(raw={"trainer": {"steps": math.inf}})  # int(inf): OverflowError
@example(raw={"trainer": {"steps": math.nan}})  # int(nan): ValueError
@example(raw={"trainer": {"lr": 10**400}})  # float(10**400): OverflowError
@example(raw={"eval": {"n": 10**400}})  # an int field holding an int beyond float range
@example(raw={"model": "abc"})  # dict("abc"): ValueError
@example(raw={"model": 5})  # dict(5): TypeError
def test_random_config_dict_is_valid_or_a_config_error(raw):
    check_config(lambda: from_dict(raw))


@fuzz(200)
@given(base=st.sampled_from([None, CONFIG]), overrides=OVERRIDES)
def test_random_overrides_are_valid_or_a_config_error(base, overrides):
    check_config(lambda: load_config(base, overrides))


@fuzz(100)
@given(
    content=st.one_of(
        raw_configs().map(lambda r: yaml.safe_dump(r).encode()),
        raw_configs().map(lambda r: yaml.safe_dump(r).encode()[:-7]),  # truncated
        st.text(max_size=60).map(str.encode),
        st.binary(max_size=60),
    )
)
@example(content=b"name: \xff\xfe\n")  # not UTF-8
@example(content=b"\xef\xbb\xbfname: bom\n")  # a UTF-8 byte-order mark is fine
def test_random_config_file_is_valid_or_a_config_error(content):
    with scratch() as d:
        p = d / "c.yaml"
        p.write_bytes(content)
        check_config(lambda: load_config(p))


def bounded(key: str, ok: list, bad: list = (0, -1, "x", 1.5, None)) -> st.SearchStrategy[str]:
    """``key=value`` for a field that sets the cost of a run: small valid values, or invalid ones."""
    return st.sampled_from([*ok, *bad]).map(lambda v: f"{key}={as_yaml_text(v)}")


# These come last on the command line, so whatever the random part says, a run stays tiny.
SIZE_OVERRIDES = st.tuples(
    bounded("trainer.steps", [1, 2, 3]),
    bounded("data.n", [8, 40, 64]),
    bounded("model.hidden", [4, 8]),
    bounded("model.depth", [1, 2]),
    bounded("model.time_dim", [2, 4]),
    bounded("trainer.batch_size", [1, 16, 1000]),
    bounded("trainer.checkpoint_every", [1, 2, 100]),
    bounded("trainer.eval_every", [0, 0, 0, 2]),
    bounded("trainer.val_every", [0, 1]),
    bounded("model.steps", [1, 2]),
    bounded("model.sampler", ["euler", "midpoint", "eulr"], bad=[]),
    bounded("eval.options.sampler", [None, "euler"], bad=["dopri6"]),
    bounded("eval.options.steps", [None, 2]),
    bounded("eval.options", [{}], bad=[{"temprature": 1}, {"eta": "x"}, []]),
    bounded("eval.n", [16, 32]),
    bounded("eval.seeds", [1, 2]),
    bounded("eval.nll_n", [8, 16]),
    bounded("data.options", [{}], bad=[{}, {"noise": 0.1}, {"nosie": 1}, {"noise": "a"}]),
    bounded("model.family", ["flow-matching"], bad=[]),
)


@fuzz(150)
@given(
    raw=raw_configs(),
    overrides=OVERRIDES,
    sizes=SIZE_OVERRIDES,
    evaluate=st.sampled_from([False, False, False, True]),
    resume=st.booleans(),
)
@example(  # manual_seed overflow on a huge seed
    raw={},
    overrides=["data.seed=100000000000000000000000000"],
    sizes=("trainer.steps=2",),
    evaluate=False,
    resume=False,
)
@example(raw={}, overrides=["trainer.betas=[2, 3]"], sizes=(), evaluate=False, resume=False)
@example(raw={}, overrides=["data.options={1: 2}"], sizes=(), evaluate=False, resume=False)
@example(raw={}, overrides=["trainer.device=meta"], sizes=(), evaluate=False, resume=False)
@example(raw={}, overrides=["trainer.device=hpu"], sizes=(), evaluate=False, resume=False)
@example(
    raw={"data": {"name": "pinwheel", "options": {"arms": 0}}},
    overrides=[],
    sizes=(),
    evaluate=False,
    resume=False,
)
@example(raw={}, overrides=["data.options={noise: null}"], sizes=(), evaluate=False, resume=False)
@example(raw={}, overrides=["eval.metrics=[{a: 1}]"], sizes=(), evaluate=True, resume=False)
def test_cli_train_with_a_random_config_exits_0_or_2(raw, overrides, sizes, evaluate, resume):
    base = [
        "trainer.steps=2",
        "data.n=64",
        "model.hidden=8",
        "model.depth=1",
        "model.sampler=euler",
        "model.steps=2",
        "eval.n=16",
        "eval.seeds=1",
        "eval.nll_n=8",
        "trainer.batch_size=16",
    ]
    with scratch() as d:
        (d / "c.yaml").write_text(yaml.safe_dump(raw))
        args = ["train", "c.yaml", *overrides, *base, *sizes, *TINY, "--out", "run"]
        args += [] if evaluate else ["--no-eval"]
        args += ["--resume"] if resume else []
        code, _, err = run_cli(*args)
    assert_clean_exit(code, err)


# --------------------------------------------------------------------------------------------------
# 2. Malformed data files
# --------------------------------------------------------------------------------------------------

DTYPES = ["f4", "f8", "f2", "i1", "i8", "u1", "u2", "?", "c8", "U3", "S2", "O", "M8[s]", "V4"]
ELEMENTS = st.one_of(
    [st.floats(-300, 300)] * 6
    + [
        st.floats(allow_nan=True, allow_infinity=True, width=64),
        st.sampled_from([math.nan, math.inf, 1e300, -1e300, 1e39, 255.0, 0.0, -1.0]),
    ]
)
NUMERIC = ["f4", "f8", "f2", "i1", "i8", "u1", "u2", "?"]


@st.composite
def arrays(draw: st.DrawFn, max_dims: int = 5) -> np.ndarray:
    """Arrays of any rank (0-5, each side 0-6) and many dtypes, with NaN/inf/huge values."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6))
    if draw(st.integers(0, 3)) == 0:  # uint8 images in some layout
        shape = draw(
            st.sampled_from([(3, 4, 5), (2, 3, 3, 1), (2, 1, 3, 3), (2, 4, 4, 3), (0, 2, 2)])
        )
    clean = draw(st.booleans())  # else some NaN/inf/huge values
    base = draw(hnp.arrays(np.float64, shape, elements=st.floats(-300, 300) if clean else ELEMENTS))
    dtype = draw(st.sampled_from(NUMERIC) | st.sampled_from(NUMERIC) | st.sampled_from(DTYPES))
    with np.errstate(all="ignore"):
        try:
            if dtype == "M8[s]":
                return np.nan_to_num(base).astype("i8").astype(dtype)
            return base.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return np.zeros(shape, dtype=dtype)


def mutate(raw: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Byte-level damage: (kind, position, value) edits; positions favour the header."""
    b = bytearray(raw)
    for kind, pos, val in edits:
        if not b:
            break
        pos %= len(b) if pos > 200 else min(len(b), 200)
        if kind == 0:
            b = b[:pos]  # truncate
        elif kind == 1:
            b[pos] = val  # overwrite a byte
        elif kind == 2:
            b[pos:pos] = bytes([val])  # insert a byte
        else:
            b[pos] = ord(str(val % 10))  # a digit (e.g. in a .npy header's shape)
    return bytes(b)


EDITS = st.one_of(
    st.just([]),
    st.just([]),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npz_bytes(arrays_: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays_)
    return buf.getvalue()


def check_dataset(path: Path | str, **options: typing.Any) -> Dataset | None:
    """``genlab.data.load(path=...)`` gives a sound Dataset or a one-line DataError."""
    try:
        ds = load_data(path=path, **options)
    except DataError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        note("DataError")
        return None
    note(f"Dataset {ds.kind}")
    assert isinstance(ds, Dataset) and len(ds.train) >= 1
    if ds.kind in ("points", "images"):
        for x in (ds.train, ds.val):
            assert x.dtype == torch.float32 and bool(torch.isfinite(x).all()), "non-finite data"
        if ds.kind == "images":
            assert ds.train.dim() == 4 and float(ds.train.abs().max()) <= 1.0
        else:
            assert ds.train.dim() == 2
    for y, x in ((ds.labels_train, ds.train), (ds.labels_val, ds.val)):
        if y is not None:
            assert (
                y.dtype == torch.int64
                and y.shape == (len(x),)
                and (y.numel() == 0 or int(y.min()) >= 0)
            )
    return ds


OPTIONS = {
    ".npz": st.fixed_dictionaries({}, optional={"key": st.sampled_from(["x", "a", "", 5, None])}),
    ".csv": st.fixed_dictionaries(
        {}, optional={"delimiter": st.sampled_from([",", ";", "\t", "", ",,", 5, None, "\n", '"'])}
    ),
    "folder": st.fixed_dictionaries(
        {},
        optional={
            "size": st.sampled_from([None, 4, (3, 5), 0, -2, "ab", (1, 2, 3), [2, 2], True, 2.5]),
            "prefix": st.sampled_from([None, "train", "t10k", "x", 3, ["train"]]),
        },
    ),
}
SPLITS = st.fixed_dictionaries(
    {},
    optional={
        "n": st.sampled_from([None, 1, 2, 5, 0]),
        "val_fraction": st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0, -0.1, math.nan]),
        "seed": st.sampled_from([0, 1, 2**32 - 1]),
    },
)


@fuzz(200)
@given(
    arr=arrays(),
    suffix=st.sampled_from([".npy", ".npz", ".npz-compressed"]),
    edits=EDITS,
    labels=st.one_of(st.none(), st.none(), arrays(max_dims=2)),
    extra=st.dictionaries(
        st.sampled_from(["a", "x", "images", "y"]), arrays(max_dims=2), max_size=1
    ),
    options=OPTIONS[".npz"],
    splits=SPLITS,
)
@example(  # finite float64 that overflows float32
    arr=np.array([[1e300, 0.0]] * 4),
    suffix=".npy",
    edits=[],
    labels=None,
    extra={},
    options={},
    splits={},
)
def test_random_or_damaged_npy_npz_is_a_dataset_or_a_data_error(
    arr, suffix, edits, labels, extra, options, splits
):
    with scratch() as d:
        if suffix == ".npy":
            raw, options = npy_bytes(arr), {}
        else:
            content = {"data": arr, **extra}
            if labels is not None:
                content["labels"] = labels
            raw = npz_bytes(content, compressed=suffix.endswith("compressed"))
        p = d / ("f.npy" if suffix == ".npy" else "f.npz")
        p.write_bytes(mutate(raw, edits))
        check_dataset(p, **options, **splits)


@st.composite
def csv_text(draw: st.DrawFn) -> bytes:
    number = st.floats(-1e6, 1e6).map(repr) | st.integers(-(10**40), 10**40).map(str)
    cell = mostly(
        number,
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["", " 1 ", "1e400", "1e39", "-0", "nan", "1_0", "0x10", "a", '"1"']),
        st.text(max_size=4),
    )
    width = draw(st.integers(1, 4))
    ragged = draw(st.integers(0, 5)) == 0
    row = st.lists(cell, min_size=1 if ragged else width, max_size=width + 1 if ragged else width)
    rows = draw(st.lists(row, max_size=6))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(sep.join(r) for r in rows)
    if draw(st.booleans()):
        text = "x,y" + eol + text
    if draw(st.booleans()):
        text = "\ufeff" + text  # a BOM
    raw = text.encode("utf-8")
    return raw if draw(st.integers(0, 5)) else raw + bytes([draw(st.integers(128, 255))])


@fuzz(150)
@given(raw=csv_text() | st.binary(max_size=40), edits=EDITS, options=OPTIONS[".csv"], splits=SPLITS)
@example(raw=b"1,2\n3,4\n", edits=[], options={"delimiter": ""}, splits={})
@example(raw=b"1,2\n3,4\n", edits=[], options={"delimiter": 5}, splits={})
@example(raw=b"1,2\n1e39,4\n", edits=[], options={}, splits={})  # float32 overflow
@example(raw=b"\xef\xbb\xbf1;2\r\n3;4\r\n", edits=[], options={"delimiter": ";"}, splits={})
def test_random_csv_is_a_dataset_or_a_data_error(raw, edits, options, splits):
    with scratch() as d:
        p = d / "f.csv"
        p.write_bytes(mutate(raw, edits))
        check_dataset(p, **options, **splits)


@fuzz(60)
@given(
    raw=st.text(max_size=80).map(str.encode) | st.binary(max_size=80),
    suffix=st.sampled_from([".txt", ".TXT", ".npy", ".npz", ".csv", ".gz", ".png", "", ".bin"]),
    splits=SPLITS,
)
@example(raw=b"\xff\xfe", suffix=".txt", splits={})
@example(  # a damaged .npy header: tokenize.TokenError inside NumPy
    raw=b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,\x00, }"
    + b" " * 60
    + b"\n",
    suffix=".npy",
    splits={},
)
@example(
    raw=b"\x93NUMPY\x01\x00v\x00{'descr': '<f9', 'fortran_order': False, 'shape': (2,)}",
    suffix=".npy",
    splits={},
)
def test_random_bytes_file_is_a_dataset_or_a_data_error(raw, suffix, splits):
    with scratch() as d:
        p = d / f"f{suffix}"
        p.write_bytes(raw)
        check_dataset(p, **splits)


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(s.to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def png_bytes(mode: str, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def image_folders(draw: st.DrawFn) -> dict[str, bytes]:
    """File name -> content: IDX pairs (maybe gzipped, damaged, mismatched) or image files."""
    files: dict[str, bytes] = {}
    if draw(st.booleans()):
        n = draw(st.integers(0, 4))
        images = np.zeros((n, draw(st.integers(0, 3)), 3), np.uint8)
        labels = np.arange(draw(st.sampled_from([n, n, n + 1])), dtype=np.uint8)
        prefix = draw(st.sampled_from(["train", "t10k"]))
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            raw = idx_bytes(arr if draw(st.integers(0, 5)) else arr.reshape(-1))
            raw = mutate(raw, draw(EDITS))
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            if draw(st.booleans()):
                raw, name = mutate(gzip.compress(raw), draw(EDITS)), name + ".gz"
            files[name] = raw
    else:
        for i in range(draw(st.integers(0, 3))):
            sub = draw(st.sampled_from(["", "", "a/", "b/"]))
            mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "LA"]))
            size = draw(st.sampled_from([(2, 2), (2, 2), (3, 2), (1, 1)]))
            fmt = "PNG" if mode not in ("RGB", "L") or draw(st.booleans()) else "JPEG"
            suffix = ".png" if fmt == "PNG" else ".jpg"
            raw = (
                draw(st.binary(max_size=30))
                if draw(st.integers(0, 4)) == 0
                else png_bytes(mode, size, fmt)
            )
            files[f"{sub}{i}{suffix}"] = mutate(raw, draw(EDITS))
    return files


@fuzz(120)
@given(files=image_folders(), options=OPTIONS["folder"], splits=SPLITS)
@example(files={"0.png": png_bytes("L", (2, 2))}, options={"size": 0}, splits={})  # PIL ValueError
@example(files={"0.png": png_bytes("L", (2, 2))}, options={}, splits={"n": 0})  # IndexError
@example(files={"0.png": png_bytes("L", (2, 2))}, options={"prefix": ["x"]}, splits={})
@example(  # a damaged deflate stream: zlib.error
    files={
        "train-images-idx3-ubyte.gz": b"\x1f\x8b\x08\x00\x00\x90[\x02k\x02\xffc`\xe0`f```d\x80"
        + b"\x00f\x00T|Z\xec\x10\x00\x00\x00",
        "train-labels-idx1-ubyte": b"\0\0\x08\x01" + bytes(4),
    },
    options={},
    splits={},
)
def test_random_image_or_idx_folder_is_a_dataset_or_a_data_error(files, options, splits):
    with scratch() as d:
        folder = d / "imgs"
        folder.mkdir()
        for name, raw in files.items():
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(raw)
        check_dataset(folder, **options, **splits)


class _Tripwire:
    """Unpickling this touches a marker file: proof that a loader ran pickle on the data."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_object_arrays_are_refused_and_never_unpickled(suffix):
    with scratch() as d:
        marker = d / "unpickled"
        arr = np.array([_Tripwire(str(marker)), 1.0], dtype=object)
        p = d / f"evil{suffix}"
        if suffix == ".npy":
            np.save(p, arr, allow_pickle=True)
        else:
            np.savez(p, x=arr, labels=np.array([_Tripwire(str(marker))] * 2, dtype=object))
        with pytest.raises(DataError, match="never unpickles"):
            load_data(path=p)
        code, _, err = run_cli("train", CONFIG, f"data.path={p}", *TINY, "--out", "run")
        assert code == 2 and "never unpickles" in err
        assert not marker.exists()
        # the tripwire works: unpickling it for real does touch the marker
        loaded = np.load(p, allow_pickle=True)
        _ = loaded if suffix == ".npy" else loaded["x"]
        assert marker.exists()


# --------------------------------------------------------------------------------------------------
# 3. .pt / .pth files: not a data format; never torch.load'ed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".PT"])
def test_torch_files_are_refused_by_suffix_without_loading_them(suffix, monkeypatch):
    def no_torch_load(*args, **kwargs):
        raise AssertionError(f"torch.load called on data: {args} {kwargs}")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with scratch() as d:
        p = d / f"points{suffix}"
        buf = io.BytesIO()
        torch.save({"x": torch.randn(10, 2)}, buf)
        p.write_bytes(buf.getvalue())
        with pytest.raises(DataError) as e:
            load_data(path=p)
        for s in PATH_LOADERS:
            assert s in str(e.value)
        code, _, err = run_cli("train", CONFIG, f"data.path={p}", *TINY, "--out", "run")
        assert code == 2 and "supported files are" in err
        assert_clean_exit(code, err)


# --------------------------------------------------------------------------------------------------
# The same malformed files through the CLI: train on them, and evaluate a run against them
# --------------------------------------------------------------------------------------------------

CLI_TINY = [
    "trainer.steps=2",
    "model.hidden=8",
    "model.depth=1",
    "trainer.batch_size=8",
    "model.sampler=euler",
    "model.steps=2",
    "eval.n=16",
    "eval.seeds=1",
    "eval.nll_n=8",
    *TINY,
]


@st.composite
def data_files(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["npy", "npz", "csv", "txt", "bytes"]))
    arr = draw(arrays(max_dims=3))
    if kind == "npy":
        return "f.npy", mutate(npy_bytes(arr), draw(EDITS))
    if kind == "npz":
        content = {"x": arr}
        if (
            draw(st.booleans()) and arr.ndim >= 1
        ):  # small labels: a huge one would make a huge model
            content["labels"] = draw(
                hnp.arrays(np.int64, (len(arr),), elements=st.integers(-1, 20))
            )
        return "f.npz", mutate(npz_bytes(content, draw(st.booleans())), draw(EDITS))
    if kind == "csv":
        return "f.csv", mutate(draw(csv_text()), draw(EDITS))
    if kind == "txt":
        return "f.txt", draw(st.text(max_size=30)).encode()
    return draw(st.sampled_from(["f.npy", "f.npz", "f.csv", "f.pt"])), draw(st.binary(max_size=40))


@fuzz(60)
@given(file=data_files(), evaluate=st.sampled_from([False, False, False, True]))
def test_cli_train_on_a_malformed_file_exits_0_or_2_with_one_line(file, evaluate):
    name, raw = file
    with scratch() as d:
        (d / name).write_bytes(raw)
        args = ["train", CONFIG, f"data.path={name}", *CLI_TINY, "--out", "run"]
        code, _, err = run_cli(*args, *([] if evaluate else ["--no-eval"]))
    assert_clean_exit(code, err)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    code, _, err = run_cli("train", CONFIG, "data.n=64", *CLI_TINY, "--out", out, "--no-eval")
    assert code == 0, err
    return out


@fuzz(40)
@given(file=data_files())
def test_cli_eval_against_a_malformed_file_exits_0_or_2_with_one_line(tiny_run, file):
    name, raw = file
    with scratch() as d:
        (d / name).write_bytes(raw)
        code, _, err = run_cli("eval", tiny_run, "--data", name, "--n", 16, "--seeds", 1)
    assert_clean_exit(code, err)


def test_zip_that_is_not_an_npz_is_a_data_error():
    with scratch() as d:
        p = d / "f.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("readme.txt", "hello")
        check_dataset(p)
