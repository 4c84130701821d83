"""``genlab leaderboard``: the plan (which families fit the data, on which recipe, and why the
others are skipped), equal shares, ranking, and resuming after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genlab.cli import main as cli_main
from genlab.errors import ConfigError, GenlabError
from genlab.leaderboard import Plan, make_plan, run
from genlab.registry import MODELS


@pytest.fixture
def points(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 3)).astype("float32") * [1.0, 0.5, 0.2]
    path = tmp_path / "table.npy"
    np.save(path, x)
    return path


def test_the_plan_covers_every_family_that_fits(points):
    plan = make_plan(str(points), 10)
    assert plan.kind == "points"
    planned = {e.family for e in plan.entries}
    skipped = {e.family: e.reason for e in plan.skipped}
    assert planned | set(skipped) == set(MODELS.names())  # every registered family is accounted for
    assert {"flow-matching", "diffusion", "gan", "glow", "vae"} <= planned
    assert skipped["noise-classifier"] == "not a generative model"
    assert "does not train on points" in skipped["gpt"]
    for e in plan.entries:  # the user's file, on the family's 2-D recipe
        assert e.overrides == [f"data.path={points}"] and e.config.endswith("-moons.yaml")
    diffusion = next(e for e in plan.entries if e.family == "diffusion")
    assert diffusion.config.endswith("edm-moons.yaml")  # the shortest name among its recipes


def test_a_named_data_set_uses_its_own_recipes():
    plan = make_plan("digits", 30, ["glow", "pixelcnn"])
    assert [e.config.rsplit("/", 1)[-1] for e in plan.entries] == [
        "glow-digits.yaml", "pixelcnn-digits.yaml"]  # fmt: skip


def test_every_family_is_trained_and_scored_on_one_split():
    import genlab

    plan = make_plan("digits", 30, ["glow", "pixelcnn", "gan"])  # glow's recipe: another split
    glow = next(e for e in plan.entries if e.family == "glow")
    assert glow.overrides == ["data.val_fraction=0.1", "data.test_fraction=0.3", "data.seed=0"]
    splits = set()
    for e in plan.entries:
        cfg = genlab.load_config(e.config, e.overrides)
        splits.add((cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed))
    assert splits == {(0.1, 0.3, 0)}


def test_bad_requests_are_clear(points):
    with pytest.raises(GenlabError, match="glow"):  # did you mean
        make_plan(str(points), 1, ["glwo"])
    with pytest.raises(ConfigError, match="positive"):
        make_plan(str(points), 0)
    with pytest.raises(GenlabError, match="no file or folder"):
        make_plan("/no/such/file.npy", 1)


def test_leaderboard_ranks_and_resumes(points, tmp_path):
    out = tmp_path / "board"
    logs: list[str] = []
    run(str(points), 0.05, out, families=["glow", "gan"], log=logs.append)
    plan = json.loads((out / "leaderboard.json").read_text())
    assert [e["status"] for e in plan["entries"]] == ["done", "done"]
    board = (out / "leaderboard.md").read_text()
    ranks = [
        line for line in board.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert len(ranks) == 2 and (out / "index.html").is_file()
    w2 = [float(line.split("|")[3]) for line in ranks]
    assert w2 == sorted(w2)  # ranked by W2, lower first
    assert "- glow: change of variables" in board  # what its nll is of; a GAN has none
    # an interruption during the second run: it resumes from its checkpoint, the first is kept
    done = out / "runs" / "glow" / "metrics.json"
    stamp = done.stat().st_mtime_ns
    (out / "runs" / "gan" / "metrics.json").unlink()
    plan["entries"][1]["status"] = "training"
    (out / "leaderboard.json").write_text(json.dumps(plan))
    logs.clear()
    assert cli_main(["leaderboard", "--data", str(points), "--budget-minutes", "0.05",
                     "--out", str(out)]) == 0  # fmt: skip
    assert done.stat().st_mtime_ns == stamp
    assert (out / "runs" / "gan" / "metrics.json").is_file()
    again = json.loads((out / "leaderboard.json").read_text())
    assert again["entries"][1]["steps"] == plan["entries"][1]["steps"]  # the plan is kept
    # the same folder for other data, or with another budget, is refused and left as it was
    before = {f: f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
    with pytest.raises(ConfigError, match="another --out"):
        run("moons", 0.1, out)
    with pytest.raises(ConfigError, match="planned for 0.05 minutes, not 0.1"):
        run(str(points), 0.1, out)
    assert {f: f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()} == before


def test_plan_round_trips(points, tmp_path):
    from genlab.leaderboard import _load_plan, _save_plan

    plan = make_plan(str(points), 1, ["glow"])
    _save_plan(plan, tmp_path / "p.json")
    assert _load_plan(tmp_path / "p.json") == plan
    (tmp_path / "p.json").write_text("{")
    with pytest.raises(ConfigError, match="damaged"):
        _load_plan(tmp_path / "p.json")
    assert isinstance(plan, Plan)
