"""Configs: YAML + overrides into validated dataclasses, with messages that name the key."""

from pathlib import Path

import pytest

import genlab
from genlab.config import apply_override, from_dict, load
from genlab.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_round_trips(path, tmp_path):
    cfg = load(path)
    assert cfg.name == path.stem
    cfg.save(tmp_path / "c.yaml")
    again = load(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load(
        None,
        [
            "trainer.steps=3000",
            "model.hidden=128",
            "trainer.lr=1e-3",
            "trainer.progress=false",
            "data.path=x.npy",
            "trainer.betas=[0.8, 0.9]",
        ],
    )
    assert cfg.trainer.steps == 3000 and isinstance(cfg.trainer.steps, int)
    assert cfg.model.hidden == 128
    assert cfg.trainer.lr == 1e-3
    assert cfg.trainer.progress is False
    assert cfg.data.path == "x.npy"
    assert cfg.trainer.betas == (0.8, 0.9)


def test_integral_floats_are_accepted_as_integers_but_fractions_are_not():
    assert load(None, ["trainer.steps=100.0"]).trainer.steps == 100
    with pytest.raises(ConfigError, match="trainer.steps must be an integer, got 100.5"):
        load(None, ["trainer.steps=100.5"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainr.steps=1"], "unknown config key 'trainr'; did you mean 'trainer'"),
        (["trainer.stepz=1"], "did you mean 'trainer.steps'"),
        (["model.hiden=3"], "did you mean 'model.hidden'"),
        (
            ["model.coupling=OT"],
            "model.coupling must be one of 'independent', 'ot', 'pairs', got 'OT'",
        ),
        (["trainer.schedule=cosin"], "did you mean 'cosine'"),
        (["trainer.lr=-1"], "trainer.lr must be positive"),
        (["trainer.ema_decay=1.5"], "trainer.ema_decay must be in [0, 1)"),
        (["trainer.progress=maybe"], "trainer.progress must be true or false"),
        (["trainer.lr=.nan"], "trainer.lr must be finite"),
        (["data.val_fraction=1"], "data.val_fraction must be in [0, 1)"),
        (["model.time_dim=7"], "model.time_dim must be an even number"),
        (["trainer.betas=0.9"], "trainer.betas must be a list of 2 values"),
        (["model.family=gan-x"], "unknown model 'gan-x'"),
        (["data.name=null"], "data needs a dataset name"),
        (["trainer=3"], "config section 'trainer' must be a mapping"),
        (["steps"], "must look like key=value"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(overrides, message):
    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    assert message in str(e.value)


def test_a_config_file_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(p)
    p.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)
    with pytest.raises(ConfigError, match="config file not found.*did you mean"):
        load(tmp_path / "c.yml")


def test_apply_override_builds_nested_sections():
    raw = {}
    apply_override(raw, "data.options.noise=0.1")
    assert raw == {"data": {"options": {"noise": 0.1}}}
    assert from_dict(raw).data.options == {"noise": 0.1}


def test_resolved_config_is_what_the_python_api_sees():
    cfg = genlab.load_config(None, ["model.coupling=ot"])
    assert cfg.family == "flow-matching" and cfg.model.coupling == "ot"
    assert cfg.to_dict()["model"]["family"] == "flow-matching"
