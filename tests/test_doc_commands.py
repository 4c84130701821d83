"""Every ``genlab ...`` command the documentation prints runs.

The commands are read from the code blocks of ``README.md`` and ``docs/*.md`` and from the comment
headers of ``configs/*.yaml``, and run file by file, in the order the file gives them (a training
before the sample that uses it), in a scratch directory holding ``configs/`` and the data files the
docs name (``points.npy``, ``table.npy``, ``book.txt``, image folders...). Each runs at a tiny size:
:data:`TINY` appends overrides and flags that shrink steps, samples and held-out sets (the last
occurrence of a flag or key wins, so the documented values are replaced, never the command's
shape). A command that is a template (a placeholder such as ``RUN_DIR``, ``FILE`` or ``...``) is
not run; :func:`test_templates_are_few_and_named` lists them.

A documented command that fails makes its file's test fail with the command and its stderr.

Running all of them takes longer than the whole suite may (about 300 commands), so it is marked
``docs`` and run by ``make test-docs``; ``make test`` runs the fast half, which parses every
command with genlab's own parser and loads every config it trains with its overrides (an unknown
flag or key, a missing config, a bad value: the usual ways a page goes stale)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"(?<![\w./-])(?:[A-Z][A-Z0-9_]{2,})(?![\w])|\.\.\.|<[a-z]")

# what each subcommand gets appended (the last value of a flag or key wins)
TRAIN = ["trainer.steps=3", "trainer.warmup=0", "trainer.checkpoint_every=3", "trainer.log_every=1",
         "trainer.val_every=0", "trainer.eval_every=0", "trainer.progress=false",
         "trainer.tensorboard=false", "trainer.batch_size=16", "eval.n=16", "eval.seeds=1",
         "eval.nll_n=16"]  # fmt: skip
TINY = {
    "train": TRAIN,
    "reflow": ["--pairs", "64", *TRAIN],
    "sample": ["--n", "16"],  # (as many as eval scores: the image metrics need 10 or more)
    "eval": ["--n", "16", "--seeds", "1", "--nll-n", "16"],
    "leaderboard": ["--budget-minutes", "0.2"],
    "encode": ["--batch", "64"],
}
# commands a file relies on that an earlier section of the same page or `make demo` ran
PRELUDE = {
    "README.md": ["genlab train configs/flow-matching-moons.yaml --out runs/demo"],
}


def sources() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "configs").glob("*.yaml"))]  # fmt: skip


def documented(path: Path) -> list[tuple[str, str | None]]:
    """The ``genlab`` command lines of a page's code blocks or a config's comment header, each
    with the error the page shows right after it (``genlab train: error: ...``: the command must
    fail with that message), else None. ``a; b`` and ``a && b`` are two commands."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".yaml":
        lines = [ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")]
    else:
        lines = []
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            lines += [ln.strip().removeprefix("$ ") for ln in block.splitlines()]
    joined: list[str] = []  # a line ending in a backslash continues on the next
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line
        else:
            joined.append(line)
    out: list[tuple[str, str | None]] = []
    for line in joined:
        error = re.match(r"genlab [a-z]+: error: (.*)$", line)
        if error and out:  # the output of the command above
            out[-1] = (out[-1][0], error.group(1).split("(")[0].strip())
            continue
        line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment
        if line.startswith("genlab "):
            out += [(part.strip(), None) for part in re.split(r";|&&", line) if part.strip()]
    return out


def is_template(command: str) -> bool:
    """A placeholder outside quotes (``RUN_DIR``, ``FILE``, ``...``): not a command to run."""
    unquoted = re.sub(r"\"[^\"]*\"|'[^']*'", "", command)
    return bool(PLACEHOLDER.search(unquoted))


def tiny(command: str) -> list[str]:
    import shlex

    argv = shlex.split(command)[1:]
    return [*argv, *TINY.get(argv[0], [])]


def scratch(tmp: Path, cache: Path | None = None) -> dict[str, str]:
    """A scratch directory with configs/ and the data files the docs name; its environment
    (``cache``: where feature networks are cached, shared by the pages of a session)."""
    (tmp / "configs").symlink_to(ROOT / "configs")
    rng = np.random.default_rng(0)
    for name, shape in (("points.npy", (600, 2)), ("heldout.npy", (200, 2)),
                        ("table.npy", (400, 5)), ("other.npy", (300, 2))):  # fmt: skip
        np.save(tmp / name, rng.normal(size=shape).astype(np.float32))
    np.savetxt(tmp / "table.csv", rng.normal(size=(400, 5)), delimiter=",")
    book = (ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").read_text()
    for name in ("book.txt", "other.txt"):
        (tmp / name).write_text(book[: 60_000 if name == "book.txt" else 20_000])
    home = tmp / "home"
    for folder in (tmp / "my-images", home / "my-pngs"):
        _png_folder(folder, rng)
    _idx_folder(home / "my-idx", rng)
    return {"HOME": str(home), "GENLAB_CACHE": str(cache or tmp.parent / "cache")}


def _png_folder(folder: Path, rng) -> None:
    from PIL import Image

    for k in range(2):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(30):
            pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{k}" / f"{i}.png")


def _idx_folder(folder: Path, rng) -> None:
    """A tiny IDX pair, as MNIST ships (images and labels, gzipped)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    n = 120
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n, dtype=np.uint8)
    head_x = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    head_y = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(head_x + x.tobytes())
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(head_y + y.tobytes())


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """``genlab COMMAND`` in this process (``genlab.cli.main``), in ``cwd`` with ``env``:
    its exit status and stderr."""
    import contextlib
    import io
    import signal

    from genlab.cli import main

    saved = os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM)
    err = io.StringIO()
    try:
        os.chdir(cwd)
        os.environ.update(env)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(tiny(command))
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        signal.signal(signal.SIGTERM, saved[2])
    return int(code or 0), err.getvalue()


PAGES = [p for p in sources() if any(not is_template(c) for c, _ in documented(p))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses_and_its_config_loads(page):
    import genlab
    from genlab.cli import build_parser, parse

    for command, error in documented(page):
        if is_template(command) or error:
            continue
        argv = tiny(command)
        try:
            args = parse(build_parser(), argv)
        except SystemExit:
            pytest.fail(f"{page.name}: `{command}` is refused by the parser")
        config = getattr(args, "config", None)
        if args.command == "train" and config and not config.startswith("runs/"):
            genlab.load_config(ROOT / config, [o for o in args.overrides if "path=" not in o])


@pytest.mark.docs
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_runs(page, tmp_path, tmp_path_factory):
    work = tmp_path / "work"
    work.mkdir()
    env = scratch(work, tmp_path_factory.getbasetemp() / "feature-cache")
    prelude = [(c, None) for c in PRELUDE.get(str(page.relative_to(ROOT)), [])]
    for command, error in prelude + documented(page):
        if is_template(command):
            continue
        code, err = run(command, work, env)
        if error:  # the page shows this command failing: it must fail, with that message
            assert code == 2 and error in err, f"{page.name}: `{command}` should say {error!r}"
        else:
            assert code == 0, f"{page.name}: `{command}` exited {code}:\n{err[-2000:]}"
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_never_trains_into_a_run_it_already_made(page):
    """Followed top to bottom, a page's second ``--out runs/x`` (without ``--resume``) would be
    refused: genlab never trains over a run."""
    import shlex

    made: set[str] = set()
    for command, error in documented(page):
        argv = shlex.split(command)[1:]
        if is_template(command) or error or argv[0] not in ("train", "reflow"):
            continue
        if "--out" in argv:
            out = argv[argv.index("--out") + 1].rstrip("/")
            assert out not in made or "--resume" in argv, f"{page.name}: `{command}`"
            made.add(out)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_never_writes_a_sample_or_code_file_twice(page):
    """``sample`` and ``encode`` refuse an existing ``--out`` without ``--force``: followed top to
    bottom, a page names each of their output files once."""
    import shlex

    written: set[str] = set()
    for command, error in documented(page):
        argv = shlex.split(command)[1:]
        if is_template(command) or error or argv[0] not in ("sample", "encode"):
            continue
        out = argv[argv.index("--out") + 1] if "--out" in argv else "samples.npy"
        assert out not in written or "--force" in argv, f"{page.name}: `{command}`"
        written.add(out)


def test_commands_are_found_in_every_kind_of_source():
    found = {p.suffix: 0 for p in sources()}
    for p in sources():
        found[p.suffix] += len(documented(p))
    assert found[".md"] > 100 and found[".yaml"] > 50
    assert documented(ROOT / "README.md")[0][0].startswith("genlab train")
    errors = dict(documented(ROOT / "docs" / "training.md"))
    assert errors["genlab train configs/flow-matching-moons.yaml trainer.stpes=3"].startswith(
        "unknown config key 'trainer.stpes'"
    )


def test_templates_are_few_and_named():
    templates = [(p.name, c) for p in sources() for c, _ in documented(p) if is_template(c)]
    assert len(templates) < 10, templates
    assert not is_template("genlab train configs/ddpm-moons.yaml --out runs/ddpm")
    assert is_template("genlab train configs/ldm-mnist.yaml model.autoencoder=RUN_DIR --out x")
