"""`genlab score`: samples from anywhere on `genlab eval`'s yardstick. A run's own samples scored
against the run's data give exactly the figures of `genlab eval` (points, images, text); other
layouts of the same images give the same figures; bad samples are refused in one line."""

import json
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.val_every=0"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _mixture(path: Path, n: int = 900) -> None:
    rng = np.random.default_rng(7)  # a denser mixture than any bundled set: 12 modes
    centres = rng.normal(size=(12, 2)) * 3
    x = centres[rng.integers(0, 12, n)] + 0.25 * rng.normal(size=(n, 2))
    np.save(path, x.astype(np.float32))


def _same_figures(evaluated: dict, scored: dict) -> None:
    assert scored["split"] == evaluated["split"] == "test"
    assert set(scored["metrics"]) == set(evaluated["metrics"]) - {"nll"}
    for name, entry in scored["metrics"].items():
        assert entry == evaluated["metrics"][name], name  # value, floor, n, split: all of it
    assert scored["reference"] == evaluated["reference"]
    assert scored["floor"] == evaluated["floor"]


@pytest.fixture(scope="module")
def points_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    _mixture(tmp / "mix.npy")
    out = tmp / "run"
    assert main(["train", str(ROOT / "configs" / "flow-matching-moons.yaml"),
                 f"data.path={tmp / 'mix.npy'}", "trainer.steps=40", "model.sampler=euler",
                 "model.steps=8", *QUIET, "--no-eval", "--out", str(out)]) == 0  # fmt: skip
    return out


def test_a_runs_own_point_samples_score_exactly_as_genlab_eval_scores_them(
    points_run, tmp_path, capsys
):
    code, _, err = run_cli(capsys, "sample", points_run, "--n", 80, "--out", tmp_path / "s.npy")
    assert code == 0, err
    code, text, err = run_cli(capsys, "eval", points_run, "--n", 80, "--seeds", 1, "--no-nll",
                              "--json")  # fmt: skip
    assert code == 0, err
    evaluated = json.loads(text)
    code, text, err = run_cli(capsys, "score", tmp_path / "s.npy", "--data", points_run, "--json")
    assert code == 0, err
    scored = json.loads(text)
    _same_figures(evaluated, scored)
    given = scored["samples_given"]
    assert given["count"] == 80 and len(given["sha256"]) == 64
    assert "score: scoring: 80 samples" in err  # progress on stderr


def test_scoring_in_blocks_per_seed_matches_eval_seed_by_seed(points_run, tmp_path, capsys):
    # two seeds: eval's seed s compares its draws with reference set s; score compares block s
    code, text, _ = run_cli(capsys, "eval", points_run, "--n", 50, "--seeds", 2, "--no-nll",
                            "--json")  # fmt: skip
    evaluated = json.loads(text)
    import torch

    import genlab

    run = genlab.load_run(points_run)
    blocks = []
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        blocks.append(run.model.sample(50, generator=g).x.detach().double())
    scored = genlab.score(torch.cat(blocks), points_run, seeds=2)
    for name, entry in scored["metrics"].items():
        assert entry["values"] == evaluated["metrics"][name]["values"], name


def test_a_runs_own_image_samples_score_exactly_and_any_layout_scores_alike(tmp_path, capsys):
    run = tmp_path / "digits"
    code, _, err = run_cli(capsys, "train", ROOT / "configs" / "realnvp-digits.yaml",
                           "trainer.steps=20", *QUIET, "--no-eval", "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", run, "--n", 64, "--out", tmp_path / "s.npy")
    assert code == 0, err
    code, text, err = run_cli(capsys, "eval", run, "--n", 64, "--seeds", 1, "--no-nll", "--json")
    assert code == 0, err
    evaluated = json.loads(text)
    code, text, err = run_cli(capsys, "score", tmp_path / "s.npy", "--data", run, "--json")
    assert code == 0, err
    _same_figures(evaluated, json.loads(text))

    # the same images as uint8, channels last, and as their float twins, channels first
    x = np.load(tmp_path / "s.npy")
    u8 = ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    np.save(tmp_path / "u8-hwc.npy", u8.transpose(0, 2, 3, 1))
    np.save(tmp_path / "f32.npy", u8.astype(np.float32) / np.float32(127.5) - np.float32(1))
    np.savez(tmp_path / "labelled.npz", samples=u8, labels=np.arange(64) % 10)
    figures = []
    for name in ("u8-hwc.npy", "f32.npy", "labelled.npz"):
        code, text, err = run_cli(capsys, "score", tmp_path / name, "--data", run, "--json")
        assert code == 0, err
        figures.append(json.loads(text)["metrics"])
    assert figures[0] == figures[1]
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(u8[:, 0]):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    code, text, err = run_cli(capsys, "score", folder, "--data", run, "--json")
    assert code == 0, err
    assert json.loads(text)["metrics"] == figures[0]  # a folder of PNGs: the same images
    import gzip

    head = bytes([0, 0, 8, 3]) + (64).to_bytes(4, "big") + (8).to_bytes(4, "big") * 2
    with gzip.open(tmp_path / "samples-images-idx3-ubyte.gz", "wb") as f:
        f.write(head + u8.tobytes())
    code, text, err = run_cli(capsys, "score", tmp_path / "samples-images-idx3-ubyte.gz",
                              "--data", run, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["metrics"] == figures[0]  # one IDX file: the same images
    assert "class_accuracy" in figures[2] and "class_accuracy" not in figures[0]
    assert figures[2]["fd"] == figures[0]["fd"]


def test_a_runs_own_text_samples_score_exactly_as_genlab_eval_scores_them(tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text((ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
                    .read_text(encoding="utf-8")[:30_000], encoding="utf-8")  # fmt: skip
    run = tmp_path / "gpt"
    code, _, err = run_cli(capsys, "train", ROOT / "configs" / "nanogpt-cpu-shakespeare.yaml",
                           "data.name=null", f"data.path={book}", "trainer.steps=5",
                           "model.depth=1", "model.hidden=32", "model.heads=2", *QUIET,
                           "--no-eval", "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", run, "--n", 6, "--out", tmp_path / "s.txt")
    assert code == 0, err
    code, text, err = run_cli(capsys, "eval", run, "--n", 6, "--seeds", 1, "--no-nll",
                              "--scorer", run, "--json")  # fmt: skip
    assert code == 0, err
    evaluated = json.loads(text)
    code, text, err = run_cli(capsys, "score", tmp_path / "s.txt", "--data", run, "--scorer", run,
                              "--json")  # fmt: skip
    assert code == 0, err
    _same_figures(evaluated, json.loads(text))
    assert {"gen_ppl", "unigram_entropy"} <= set(json.loads(text)["metrics"])
    code, _, err = run_cli(capsys, "score", tmp_path / "s.txt", "--data", run)
    assert code == 2 and "give --scorer RUN" in err


def _bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    rng = np.random.default_rng(0)
    grey = rng.uniform(-1, 1, size=(20, 1, 8, 8)).astype(np.float32)
    np.save(tmp / "scale255.npy", (grey + 1) * 127.5)
    np.save(tmp / "rgb.npy", np.repeat(grey, 3, axis=1))
    np.save(tmp / "big.npy", rng.uniform(-1, 1, size=(20, 1, 10, 10)).astype(np.float32))
    nan = grey.copy()
    nan[3, 0, 2, 2] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "p3.npy", rng.normal(size=(50, 3)).astype(np.float32))
    np.save(tmp / "p2.npy", rng.normal(size=(50, 2)).astype(np.float32))
    np.savez(tmp / "two.npz", a=grey, b=grey)
    np.savez(tmp / "labels.npz", samples=grey, labels=np.full(20, 12))
    (tmp / "words.txt").write_text("some words\n")
    return [
        ("scale255.npy", ["--data", "digits"], "float images range from 0.04845 to 254.9"),
        ("rgb.npy", ["--data", "digits"], "samples with 3 channel(s); expected 1x8x8 images"),
        ("big.npy", ["--data", "digits"], "samples with shape (1, 10, 10); expected 1x8x8"),
        ("nan.npy", ["--data", "digits"], "1 value(s) are NaN or infinite"),
        ("p3.npy", ["--data", "moons"], "points of dimension 3; the data 'moons' has dimension 2"),
        ("scale255.npy", ["--data", "moons"], "the data 'moons' holds points of dimension 2"),
        ("two.npz", ["--data", "digits"], "name the samples 'samples' or 'x'"),
        ("labels.npz", ["--data", "digits"], "labels go up to 12; the data has 10 classes"),
        (
            "words.txt",
            ["--data", "digits"],
            "words.txt' holds text; the data 'digits' holds images",
        ),
        ("p2.npy", ["--data", "moons", "--n", "40", "--seeds", "2"], "needs 80"),
        ("p3.npy", ["--data", "nosuchdata"], "unknown dataset 'nosuchdata'"),
        ("p3.npy", ["--data", "moons", "trainer.steps=3"], "takes data.* overrides only"),
        ("missing.npy", ["--data", "moons"], "not found"),
    ]


def test_bad_samples_are_refused_in_one_line_each(tmp_path, capsys):
    for name, args, message in _bad_inputs(tmp_path):
        code, out, err = run_cli(capsys, "score", tmp_path / name, *args)
        assert code == 2, (name, err)
        assert message in err, (name, err)
        lines = err.strip().splitlines()  # (progress lines may come first)
        assert lines[-1].startswith("genlab score: error:") and "Traceback" not in err, err
        assert sum("error" in line for line in lines) == 1, err
