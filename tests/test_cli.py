"""The command line end to end: train, sample, eval, list, and a clear message for each bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "flow-matching-moons.yaml")
TINY = [
    "trainer.steps=1500",
    "trainer.warmup=50",
    "trainer.lr=0.005",
    "model.hidden=128",
    "model.depth=3",
    "data.n=5000",
    "trainer.checkpoint_every=100",
    "trainer.log_every=50",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "eval.n=500",
    "eval.seeds=1",
    "model.sampler=euler",
    "model.steps=20",
]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert main(["train", CONFIG, *TINY, "--out", str(out)]) == 0
    return out


def test_list_shows_every_registry(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for section in ("datasets:", "models:", "samplers:", "metrics:"):
        assert section in out
    for name in ("moons", "checkerboard", "mnist", "flow-matching", "euler", "dopri5", "w2", "mmd"):
        assert f"  {name} " in out


def test_train_writes_a_complete_run(trained):
    for name in (
        "config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "metrics.csv",
        "samples.png",
        "trajectories.png",
    ):
        assert (trained / name).is_file(), name
    assert sorted(p.name for p in (trained / "checkpoints").glob("*.safetensors"))[-1] == (
        "step_0001500.safetensors"
    )
    report = json.loads((trained / "metrics.json").read_text())
    # a baseline that learned nothing: the standard normal the flow starts from
    import torch

    from genlab.data import TOY
    from genlab.eval.metrics import w2

    ref = TOY["moons"]().sample(500, torch.Generator().manual_seed(1))
    baseline = w2(torch.randn(500, 2, generator=torch.Generator().manual_seed(2)), ref)
    assert report["metrics"]["w2"]["value"] < 0.4 * baseline


def test_sample_writes_npy_with_the_requested_sampler(trained, tmp_path, capsys):
    out = tmp_path / "s.npy"
    code, text, _ = run_cli(
        capsys, "sample", trained, "--n", 123, "--sampler", "heun", "--steps", 5, "--out", out
    )
    assert code == 0 and "NFE 9" in text
    x = np.load(out)
    assert x.shape == (123, 2) and np.isfinite(x).all()
    code, _, _ = run_cli(capsys, "sample", trained, "--n", 50, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.slow  # trains and evaluates a run of its own
def test_eval_json_against_the_true_law_and_a_file(trained, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "eval", trained, "--json", "--n", 300, "--seeds", 2)
    assert code == 0
    rep = json.loads(out)
    assert set(rep["metrics"]) == {"w2", "sliced_w2", "mmd", "energy"}
    assert len(rep["metrics"]["w2"]["values"]) == 2
    assert rep["nll"]["kind"] == "exact" and "true_nats" in rep["nll"]
    import torch

    from genlab.data import TOY

    held = TOY["moons"]().sample(400, torch.Generator().manual_seed(9)).numpy()
    np.save(tmp_path / "held.npy", held)
    code, out, _ = run_cli(
        capsys, "eval", trained, "--data", tmp_path / "held.npy", "--json", "--n", 300, "--seeds", 1
    )
    assert code == 0
    rep = json.loads(out)
    assert rep["reference"] == "held-out data 'held'" and rep["nll"]["n"] == 400
    assert rep["n"] == 300 and rep["floor"].startswith("300 training examples")
    code, out, _ = run_cli(capsys, "eval", trained, "--n", 200, "--seeds", 1)
    assert code == 0 and "w2" in out and "nats" in out


@pytest.mark.slow  # trains and evaluates a run of its own
def test_any_npy_of_any_dimension_trains_and_evaluates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 5)) + 3.0
    np.save(tmp_path / "points.npy", pts.astype(np.float32))
    np.save(tmp_path / "heldout.npy", (rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))))
    out = tmp_path / "mine"
    code, _, err = run_cli(
        capsys, "train", CONFIG, f"data.path={tmp_path / 'points.npy'}", *TINY, "--out", out
    )
    assert code == 0, err
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["reference"] == "the test split of 'points'" and rep["split"] == "test"
    code, text, _ = run_cli(
        capsys, "eval", out, "--data", tmp_path / "heldout.npy", "--json", "--n", 200, "--seeds", 1
    )
    assert code == 0
    given = json.loads(text)
    assert given["nll"]["kind"] == "exact" and given["split"] == given["nll"]["split"] == "file"
    code, text, _ = run_cli(capsys, "eval", out, "--split", "val", "--json", "--seeds", 1)
    assert code == 0 and json.loads(text)["nll"]["split"] == "val"
    code, _, err = run_cli(
        capsys, "eval", out, "--split", "val", "--data", tmp_path / "heldout.npy"
    )
    assert code != 0 and "give one of them" in err and "Traceback" not in err


def test_resume_continues_a_run_to_more_steps(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    code, out, err = run_cli(
        capsys, "train", CONFIG, *TINY, "--out", run, "--resume", "--no-eval", "trainer.steps=1550"
    )  # (the overrides after the flags, as the docs write them)
    assert code == 0, err
    assert (run / "checkpoints" / "step_0001550.safetensors").is_file()
    assert "trained 50 steps (steps 1501-1550)" in out  # this invocation's steps, not the run's
    code, out, err = run_cli(capsys, "train", run / "config.yaml", "--out", run, "--resume")
    assert code == 0, err
    assert "nothing to train: the run is at step 1550 of its 1550 steps" in out


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_resume_with_another_model_or_data_refuses_naming_the_keys(trained, capsys):
    before = _tree(trained)
    gan = ROOT / "configs" / "gan-moons.yaml"
    code, _, err = run_cli(capsys, "train", gan, "--out", trained, "--resume")
    assert code == 2 and "model.family: 'flow-matching' in the run, 'gan' given" in err
    code, _, err = run_cli(
        capsys, "train", CONFIG, *TINY, "data.n=7000", "--out", trained, "--resume"
    )
    assert code == 2 and "data.n: 5000 in the run, 7000 given" in err
    assert _tree(trained) == before  # the refused commands wrote nothing


def test_overrides_are_accepted_anywhere_and_bad_flags_show_the_subcommand_usage(tmp_path, capsys):
    run = tmp_path / "r"
    code, _, err = run_cli(
        capsys, "train", CONFIG, "trainer.steps=3", "--out", run, *TINY[1:], "--no-eval",
        "trainer.steps=4",
    )  # fmt: skip
    assert code == 0, err
    assert "steps: 4" in (run / "config.yaml").read_text()
    code, _, err = run_cli(capsys, "train", CONFIG, "--out", run, "--frobnicate")
    assert code == 2 and err.strip() == (
        "genlab train: error: unrecognized arguments: --frobnicate (see genlab train --help)"
    )  # one line, naming the subcommand
    code, _, err = run_cli(capsys, "eval", run, "trainer.steps=3")  # eval takes no overrides
    assert code == 2 and "genlab eval: error: unrecognized arguments: trainer.steps=3" in err


def test_a_relative_data_path_is_stored_absolute_so_the_run_works_from_anywhere(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    np.save("points.npy", np.random.default_rng(0).normal(size=(600, 2)).astype(np.float32))
    args = ["data.path=points.npy", "trainer.steps=3", "trainer.progress=false", "eval.n=50"]
    code, _, err = run_cli(capsys, "train", CONFIG, *args, "--out", "run", "--no-eval")
    assert code == 0, err
    assert f"path: {tmp_path / 'points.npy'}" in (tmp_path / "run" / "config.yaml").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(capsys, "eval", tmp_path / "run", "--n", "50", "--seeds", "1")
    assert code == 0, err


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "configs/nope.yaml"], "config file not found"),
        (["train", CONFIG, "trainer.stpes=3"], "did you mean 'trainer.steps'"),
        (["train", CONFIG, "trainer.steps=abc"], "trainer.steps must be an integer"),
        (["train", CONFIG, "trainer.steps=-1"], "trainer.steps must be at least 1"),
        (["train", CONFIG, "model.coupling=otx"], "model.coupling must be one of"),
        (["train", CONFIG, "model.family=flow-matchin"], "did you mean 'flow-matching'"),
        (["train", CONFIG, "data.name=mons"], "did you mean 'moons'"),
        (["train", CONFIG, "data.path=/no/such/file.npy"], "not found"),
        (["train", CONFIG, "trainer.steps"], "key=value"),
        (["sample", "/no/such/run"], "run directory not found"),
        (["eval", "/no/such/run"], "run directory not found"),
    ],
)
def test_bad_input_gets_a_clear_message_and_status_2(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_surprising_inputs_fail_before_training_with_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a run folder")
    code, _, err = run_cli(capsys, "train", CONFIG, *TINY, "--out", tmp_path / "taken")
    assert code == 2 and "is a file" in err
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    np.savez(tmp_path / "huge.npz", x=x, y=np.array([0, 10**9] * 25))
    code, _, err = run_cli(capsys, "train", CONFIG, *TINY, f"data.path={tmp_path / 'huge.npz'}",
                           "--out", tmp_path / "h")  # fmt: skip
    assert code == 2 and "renumber" in err and "1,000,000,001 classes" in err
    np.save(tmp_path / "one.npy", x[:1])
    code, _, err = run_cli(capsys, "train", CONFIG, *TINY, f"data.path={tmp_path / 'one.npy'}",
                           "--out", tmp_path / "one")  # fmt: skip
    assert code == 2 and "1 training example" in err and "--no-eval" in err
    assert not (tmp_path / "one" / "checkpoints").exists()
    assert all(len(e.strip().splitlines()) == 1 for e in [err])


def test_slow_training_rates_are_not_rounded_to_zero():
    from genlab.api import _rate

    assert _rate(0.2492) == "4.01 s/step" and _rate(3.21) == "3.2 steps/s"
    assert _rate(250.4) == "250 steps/s"


def test_sampling_options_from_the_command_line(trained, tmp_path, capsys):
    out = tmp_path / "s.npy"
    code, text, _ = run_cli(capsys, "sample", trained, "--n", 8, "--option", "sampler=ddim",
                            "--option", "eta=0.5", "--option", "steps=4", "--out", out)  # fmt: skip
    assert code == 0 and "NFE 4" in text
    out = tmp_path / "refused.npy"
    code, _, err = run_cli(capsys, "sample", trained, "--option", "eta=0.5", "--out", out)
    assert code == 2 and "no sampling option 'eta'" in err and "steps" in err  # euler: no eta
    code, _, err = run_cli(capsys, "sample", trained, "--option", "steps=many", "--out", out)
    assert code == 2 and "'steps' must be an integer, got 'many'" in err
    code, _, err = run_cli(capsys, "sample", trained, "--option", "noise=1", "--out", out)
    assert code == 2 and "only be given from Python" in err


def test_bad_data_file_messages(tmp_path, capsys):
    bad = np.ones((100, 2), dtype=np.float32)
    bad[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    code, _, err = run_cli(
        capsys, "train", CONFIG, f"data.path={tmp_path / 'nan.npy'}", *TINY, "--out", tmp_path / "r"
    )
    assert code == 2 and "NaN" in err
    np.save(tmp_path / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    code, _, err = run_cli(
        capsys, "train", CONFIG, f"data.path={tmp_path / 'empty.npy'}", "--out", tmp_path / "r2"
    )
    assert code == 2 and "empty" in err


def test_unknown_sampler_and_corrupt_checkpoint(trained, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "sample", trained, "--sampler", "eulr", "--out", tmp_path / "x.npy"
    )
    assert code == 2 and "did you mean 'euler'" in err
    import shutil

    run = tmp_path / "broken"
    shutil.copytree(trained, run)
    for w in (run / "checkpoints").glob("*.safetensors"):
        w.write_bytes(w.read_bytes()[:50])
    code, _, err = run_cli(capsys, "sample", run, "--out", tmp_path / "y.npy")
    assert code == 2 and "truncated" in err
    (run / "config.yaml").unlink()
    code, _, err = run_cli(capsys, "eval", run)
    assert code == 2 and "no config.yaml" in err


def test_training_over_an_existing_run_is_refused(trained, capsys):
    before = _tree(trained)
    code, _, err = run_cli(capsys, "train", CONFIG, *TINY, "--out", trained)
    assert code == 2 and "--resume" in err
    assert _tree(trained) == before  # refused before any write


@pytest.mark.slow  # trains and evaluates a run of its own
def test_image_runs_evaluate_and_sample_to_a_grid(tmp_path, capsys):
    out = tmp_path / "digits"
    code, _, err = run_cli(capsys, "train", ROOT / "configs" / "realnvp-digits.yaml",
                           "trainer.steps=20", "trainer.progress=false", "trainer.val_every=0",
                           "eval.n=32", "eval.seeds=1", "--out", out)  # fmt: skip
    assert code == 0, err
    assert (out / "samples.png").stat().st_size > 1000
    code, text, _ = run_cli(capsys, "eval", out, "--json", "--n", 32, "--seeds", 1)
    rep = json.loads(text)
    assert code == 0 and "w2" not in rep["metrics"]  # point metrics do not apply to images
    assert {"fd", "kid", "precision", "coverage", "classifier_score"} <= set(rep["metrics"])
    assert rep["features"]["kind"] == "classifier" and rep["features"]["accuracy"] > 0.95
    fd = rep["metrics"]["fd"]
    assert fd["floor"] < fd["value"] and fd["features"] == rep["features"]["hash"]
    assert rep["nll"]["kind"] == "elbo" and rep["nll"]["bits_per_dim"] > 0
    code, _, _ = run_cli(capsys, "sample", out, "--n", 16, "--out", tmp_path / "grid.png")
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 1000


@pytest.mark.slow  # trains and evaluates a run of its own
def test_a_png_folder_without_labels_trains_and_evaluates(tmp_path, capsys):
    # data a new user brings: a flat folder of PNGs (no classes: autoencoder features, no
    # classifier score), through data.path with no code change
    from PIL import Image

    from genlab.data import load

    digits = load("digits", val_fraction=0.0).train[:300, 0]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(((digits + 1) * 127.5).round().to(torch.uint8).numpy()):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "train", ROOT / "configs" / "realnvp-digits.yaml",
                              f"data.path={folder}", "trainer.steps=10", "trainer.progress=false",
                              "trainer.val_every=0", "eval.n=40", "eval.seeds=1", "--out", out)  # fmt: skip
    assert code == 0, err
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["features"]["kind"] == "autoencoder" and rep["features"]["heldout_mse"] > 0
    assert {"fd", "kid", "precision", "recall"} <= set(rep["metrics"])
    assert "classifier_score" not in rep["metrics"]
    assert rep["reference"] == "the test split of 'pngs'" and rep["n"] == 30


def test_inception_fid_is_opt_in_and_explains_what_it_needs(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", trained, "--inception", tmp_path / "none.pth")
    assert code == 2 and "applies to images" in err
    from genlab.errors import GenlabError
    from genlab.eval.inception import load_inception

    with pytest.raises(GenlabError, match="Inception weights file .* not found"):
        load_inception(tmp_path / "none.pth")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not a real file")
    try:
        import torchmetrics  # noqa: F401
    except ImportError:  # genlab's own environment: the extra is not installed
        with pytest.raises(GenlabError, match="pip install torchmetrics torch-fidelity"):
            load_inception(weights)
    else:
        with pytest.raises(GenlabError, match="could not load Inception weights"):
            load_inception(weights)


def test_training_into_a_log_file_prints_a_progress_line_every_few_seconds(tmp_path, capsys):
    """Output that is not a terminal (capsys, a log file, CI) has no progress bar; a plain line
    every trainer.progress_every seconds says where training is."""
    args = ["trainer.steps=300", "trainer.progress_every=0.05", "trainer.log_every=10",
            "trainer.tensorboard=false", "data.n=2000", "--no-eval"]  # fmt: skip
    code, _, err = run_cli(capsys, "train", CONFIG, "--out", tmp_path / "r", *args)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "steps/s, ETA" in ln]
    assert len(lines) >= 2 and lines[-1].startswith("flow-matching-moons: step ")
    assert "nan" not in err  # before the first logged loss the line says when it comes
    assert all(re.search(r"loss (\d+\.\d{4}|first logged at step 10),", ln) for ln in lines)


def test_eval_write_records_a_no_eval_run_and_wrong_helpers_are_refused(trained, tmp_path, capsys):
    run = tmp_path / "quiet"
    args = [
        "trainer.steps=20",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "data.n=2000",
    ]
    assert main(["train", CONFIG, "--out", str(run), "--no-eval", *args]) == 0
    assert not (run / "metrics.json").exists()
    code, _, err = run_cli(capsys, "eval", run, "--n", "100", "--seeds", "1", "--write")
    assert code == 0, err
    assert (run / "metrics.json").is_file() and (run / "samples.png").is_file()
    code, _, err = run_cli(
        capsys, "sample", trained, "--classifier", run, "--out", tmp_path / "s.npy"
    )
    assert code == 2 and "needs a noise-classifier run" in err
    code, _, err = run_cli(capsys, "sample", trained, "--classifier-scale", "3", "--out", "s.npy")
    assert code == 2 and "give both" in err


def test_eval_says_what_it_is_doing_and_nll_n_bounds_the_likelihood(trained, capsys):
    code, out, err = run_cli(capsys, "eval", trained, "--n", "100", "--seeds", "2", "--nll-n", "50")
    assert code == 0, err
    assert "eval: sampling: 100 samples, seed 2 of 2 ..." in err
    assert "eval: likelihood: at most 50 held-out examples" in err and "done in" in err
    code, _, err = run_cli(capsys, "eval", trained, "--nll-n", "0")
    assert code == 2 and "--nll-n must be at least 1" in err


def test_encode_refuses_a_run_without_a_latent_and_a_bad_out_before_any_work(
    trained, tmp_path, capsys
):
    code, _, err = run_cli(capsys, "encode", trained, "--out", tmp_path / "codes.npz")
    assert code == 2 and "has no latent to encode to" in err
    code, _, err = run_cli(capsys, "encode", "/no/such/run", "--out", tmp_path / "codes.txt")
    assert code == 2 and "must name an .npz file" in err  # checked before the run is read
    assert not list(tmp_path.iterdir())


def test_sample_and_encode_never_replace_a_file_without_force(trained, tmp_path, capsys):
    out = tmp_path / "mine.npy"
    np.save(out, np.arange(3.0))
    (tmp_path / "folder.npy").mkdir()
    before = _tree(tmp_path)
    code, _, err = run_cli(capsys, "sample", trained, "--n", 5, "--out", out)
    assert code == 2 and "exists; give another name, or --force" in err
    code, _, err = run_cli(capsys, "sample", "/no/such/run", "--out", tmp_path / "folder.npy")
    assert code == 2 and "is a folder" in err  # the output is checked before the run is read
    assert _tree(tmp_path) == before
    np.savez(tmp_path / "codes.npz", a=np.zeros(2))
    before = _tree(tmp_path)
    code, _, err = run_cli(capsys, "encode", "/no/such/run", "--out", tmp_path / "codes.npz")
    assert code == 2 and "exists; give another name, or --force" in err
    assert _tree(tmp_path) == before  # refused: every file as it was
    code, text, _ = run_cli(capsys, "sample", trained, "--n", 5, "--out", out, "--force")
    assert code == 0 and np.load(out).shape == (5, 2)


def test_report_refuses_a_folder_that_is_not_a_report_and_writes_nothing(trained, tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    for out in (trained, mine, trained / "config.yaml"):
        before = _tree(tmp_path), _tree(trained)
        code, _, err = run_cli(capsys, "report", trained, "--out", out)
        assert code == 2 and "--out" in err, err
        assert (_tree(tmp_path), _tree(trained)) == before
    page = tmp_path / "page"
    for _ in range(2):  # an earlier report's folder is rewritten
        code, _, err = run_cli(capsys, "report", trained, "--no-nfe", "--out", page)
        assert code == 0, err
    assert sorted(p.name for p in page.iterdir()) == ["img", "index.html", "report.md"]


def test_features_refuses_bad_data_before_touching_the_cache(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENLAB_CACHE", str(cache))
    np.save(tmp_path / "points.npy", np.zeros((50, 2), np.float32))
    (tmp_path / "empty").mkdir()
    for data, message in (("nosuch", "unknown dataset"), (tmp_path / "points.npy", "for images"),
                          (tmp_path / "empty", "holds no .png")):  # fmt: skip
        code, _, err = run_cli(capsys, "features", data)
        assert code == 2 and message in err, err
    assert not cache.exists()


def test_chunks_split_as_torch_does_and_report_only_inside_reporting(capsys):
    from genlab.progress import chunks, reporting

    x = torch.arange(10)
    assert [c.tolist() for c in chunks(x, 4)] == [c.tolist() for c in torch.split(x, 4)]
    assert capsys.readouterr().err == ""  # the library is quiet from Python
    with reporting("eval: likelihood", every=0.0):
        assert sum(len(c) for c in chunks(x, 4)) == 10
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(", ETA")[0] for ln in lines] == [
        "eval: likelihood: 4/10 rows",
        "eval: likelihood: 8/10 rows",
    ]  # the last chunk ends the pass: no line for it
    from genlab.progress import step_range

    with reporting("sample", every=0.0):  # the outer loop is reported, not the ones inside it
        for _ in step_range(3, 0, -1, unit="blocks"):
            assert list(step_range(2)) == [0, 1]
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(", ETA")[0] for ln in lines] == ["sample: 1/3 blocks", "sample: 2/3 blocks"]
