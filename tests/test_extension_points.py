"""Every extension point is guarded by a test built from its registry: a family, sampler, text
sampler or metric added without one of its pieces fails here, not in a user's hands.

Where else the registries drive the tests: ``tests/families.py`` (a tiny recipe per family, for
exact resume and one-vs-two processes), ``tests/test_diffusion.py`` (the oracle tests of every
sampler, split by its ``ode`` metadata), ``tests/test_evaluate.py`` (every family's options)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import genlab
from genlab.models.base import GenerativeModel
from genlab.registry import METRICS, MODELS, SAMPLERS, TEXT_SAMPLERS

SRC = Path(__file__).resolve().parents[1] / "src"


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _library_model_classes() -> list[type]:
    return [c for c in _subclasses(GenerativeModel) if c.__module__.startswith("genlab.models.")]


def test_every_module_under_models_is_imported_by_the_package():
    """A family module that ``genlab/models`` forgets to import never registers: a fresh
    interpreter that imports ``genlab`` must hold every module of the tree."""
    tree = sorted(
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for p in (SRC / "genlab" / "models").rglob("*.py")
    )
    code = (
        "import json, sys, genlab; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('genlab.models'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(set(tree) - set(loaded)) == []


def test_every_model_class_is_a_registered_family_or_the_base_of_one():
    """A concrete model class written without ``@MODELS.register`` has no name, no config lookup
    and no place in ``genlab list``; only the shared bases of registered families may be unnamed."""
    registered = {e.obj for e in MODELS.in_order()}
    orphans = [
        c.__qualname__
        for c in _library_model_classes()
        if c not in registered and not any(s in registered for s in _subclasses(c))
    ]
    assert orphans == []


@pytest.mark.parametrize("entry", MODELS.in_order(), ids=lambda e: e.name)
def test_a_family_is_named_once_where_it_is_registered(entry):
    assert entry.obj.family == entry.name
    assert entry.obj.Config is not object, f"{entry.name} declares no Config dataclass"
    assert entry.help, f"{entry.name} has no help line for genlab list"


def test_registering_a_family_that_names_itself_again_is_refused():
    from genlab.registry import Registry, _name_family

    reg = Registry("model", on_register=_name_family)

    class Twice(GenerativeModel):
        family = "twice"

    with pytest.raises(ValueError, match="registered under"):
        reg.register("twice", Twice)


@pytest.mark.parametrize("entry", SAMPLERS.in_order(), ids=lambda e: e.name)
def test_every_sampler_declares_whether_it_solves_the_ode(entry):
    """The oracle tests pick each sampler's test by this flag (deterministic samplers must agree
    with the exact ODE solution, stochastic ones with the law): a sampler without it is untested."""
    assert isinstance(entry.meta.get("ode"), bool)
    assert entry.help


@pytest.mark.parametrize("entry", TEXT_SAMPLERS.in_order(), ids=lambda e: e.name)
def test_every_text_sampler_names_its_families_and_steps_both_transitions(entry):
    families = entry.meta.get("families", ())
    assert families and all(f in MODELS for f in families)
    assert callable(getattr(entry.obj, "absorb", None))
    assert callable(getattr(entry.obj, "uniform", None))


def test_every_text_sampler_is_what_its_families_sample_with():
    """The sampler option of each family that takes text samplers accepts exactly the registered
    ones (an unknown name fails with a suggestion)."""
    from genlab.errors import ConfigError
    from genlab.models.discrete_diffusion.sedd import text_sampler

    for entry in TEXT_SAMPLERS.in_order():
        for family in entry.meta["families"]:
            assert text_sampler(entry.name, family) is entry.obj
    with pytest.raises(
        ConfigError, match="one of tweedie, euler, got 'eulr'; did you mean 'euler'"
    ):
        text_sampler("eulr", "sedd")
    with pytest.raises(ConfigError, match="must be one of , got 'tweedie'"):
        text_sampler("tweedie", "mdlm")  # (a family that takes none)


@pytest.mark.parametrize("entry", METRICS.in_order(), ids=lambda e: e.name)
def test_every_metric_declares_its_kinds_needs_and_direction(entry):
    from genlab.data.base import KINDS
    from genlab.eval.metrics import NEEDS

    rec = entry.obj
    assert rec.name == entry.name and rec.units and rec.help
    assert rec.kinds and set(rec.kinds) <= set(KINDS)
    assert set(rec.needs) <= set(NEEDS)
    assert isinstance(rec.lower_is_better, bool)


def test_the_library_registers_what_genlab_list_shows():
    from genlab.registry import ALL

    assert ALL["models"] is MODELS and ALL["text samplers"] is TEXT_SAMPLERS
    assert genlab.__all__  # (the package imported, so every registry is filled)
    assert all(len(reg.in_order()) > 0 for reg in ALL.values())
