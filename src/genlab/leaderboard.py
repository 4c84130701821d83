"""``genlab leaderboard --data DATA --budget-minutes M --out DIR``: every registered family that fits
the data, each with its default recipe scaled to an equal share of a CPU budget, evaluated with the
same metrics, ranked, and written up with :mod:`genlab.report`.

**Which recipe.** For each family, the configs in ``configs/`` whose model is that family, for the
data set when one is named (``configs/glow-digits.yaml`` for ``--data digits``), else for the data's
kind: two moons for points, digits for images, tiny-shakespeare for text, with ``data.path=`` set to
the file; among several, ``<family>-<data>.yaml``, else the shortest name (``edm-moons`` before
``ddpm-moons``). Families that cannot sample (a noise classifier), that do not take the data's kind,
or whose recipe does not build on the data (a second stage without its first) are listed with the
reason and skipped.

**Equal budget.** Every family gets the same share of the budget, split into training
(``TRAIN_SHARE`` of it) and evaluation. A short probe (a few steps through genlab's trainer)
measures the family's step rate; its run gets ``steps = rate × training time``, at most the
recipe's own steps, and keeps the recipe's schedule (warmup, cosine) over those steps. The shares
are fixed by the plan: a family that needs less (its recipe's steps reached) ends the board early
rather than giving others more. The evaluation is the same for every family: one seed, ``EVAL_N``
samples (points: 2,000; images: 500; text: bits per character only), the held-out likelihood on
``NLL_N`` examples, and probability-flow ODE likelihoods solved at ``ODE_TOLERANCE`` instead of
the 1e-5 of ``genlab eval`` (several times faster, at a small cost in the NLL's accuracy; the
report's config shows the tolerance). A family
whose sampling or likelihood is slow may still overrun its share there; the board says how long
each took.

**Resume.** ``DIR/leaderboard.json`` holds the plan. Run the same command again after an
interruption: finished runs (with their ``metrics.json``) are kept, the run that was interrupted
resumes from its checkpoint, the others start.

**Ranking.** By one metric per data kind, lower is better: ``w2`` for points, ``fd`` for images,
the held-out NLL for text; ``DIR/leaderboard.md`` has the ranking, ``DIR/index.html`` and
``DIR/report.md`` the whole report.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from genlab.errors import ConfigError, DataError, GenlabError

TRAIN_SHARE = 0.7  # of each family's time; the rest is its evaluation
PROBE_STEPS = 6
KIND_DATA = {"points": "moons", "images": "digits", "tokens": "shakespeare"}
EVAL_N = {"points": 2000, "images": 500, "tokens": 0}
NLL_N = {"points": 2000, "images": 256, "tokens": 2000}
ODE_TOLERANCE = 1e-3  # rtol and atol of the likelihood ODE, for families that declare them
RANK_BY = {"points": "w2", "images": "fd", "tokens": "nll"}


@dataclass
class Entry:
    family: str
    config: str
    overrides: list[str]
    steps: int | None = None  # fixed by the probe, then kept (a resumed run keeps its plan)
    status: str = "pending"  # pending, training, done, failed, skipped
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Plan:
    data: str
    kind: str
    budget_s: float
    entries: list[Entry] = field(default_factory=list)
    skipped: list[Entry] = field(default_factory=list)


def configs_dir() -> Path:
    """``configs/`` of the working directory, else of the repository genlab runs from."""
    here = Path.cwd() / "configs"
    if here.is_dir():
        return here
    repo = Path(__file__).resolve().parents[2] / "configs"
    if repo.is_dir():
        return repo
    raise ConfigError("no configs/ folder here or beside genlab's source: run from the repository")


def _recipes() -> dict[tuple[str, str], list[Path]]:
    """(family, data name) -> config files."""
    out: dict[tuple[str, str], list[Path]] = {}
    for p in sorted(configs_dir().glob("*.yaml")):
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        family = (raw.get("model") or {}).get("family") or raw.get("family")
        data = (raw.get("data") or {}).get("name")
        if family and data:
            out.setdefault((str(family), str(data)), []).append(p)
    return out


def _pick(paths: list[Path], family: str, data: str) -> Path:
    exact = [p for p in paths if p.stem == f"{family}-{data}"]
    return exact[0] if exact else min(paths, key=lambda p: (len(p.stem), p.stem))


def make_plan(data: str, budget_minutes: float, families: list[str] | None = None) -> Plan:
    """Which families run, on which recipe and overrides (no training yet)."""
    import genlab
    from genlab.data import load
    from genlab.registry import DATASETS, MODELS

    if budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes must be positive, got {budget_minutes}")
    named = data in DATASETS.names()
    if not named and not Path(data).expanduser().exists():
        raise DataError(f"{DATASETS.unknown_message(data)}, and no file or folder {data!r}")
    ds = load(data) if named else load(path=data)
    kind = ds.kind
    plan = Plan(data=data, kind=kind, budget_s=60.0 * budget_minutes)
    recipes = _recipes()
    splits: dict[str, tuple[float, float, int]] = {}  # family -> its recipe's split of the data
    wanted = families or MODELS.names()
    for name in families or []:
        MODELS.get(name)  # an unknown family: did-you-mean
    for family in wanted:
        cls = MODELS.get(family)
        entry = Entry(family, "", [])
        if not cls.can_sample:
            entry.reason = "not a generative model"
        elif kind not in cls.data_kinds:
            entry.reason = f"does not train on {kind}"
        else:
            if named and (family, data) in recipes:
                entry.config = str(_pick(recipes[(family, data)], family, data))
            elif (family, KIND_DATA[kind]) in recipes:
                base = KIND_DATA[kind]
                entry.config = str(_pick(recipes[(family, base)], family, base))
                entry.overrides = [f"data.name={data}"] if named else [f"data.path={data}"]
            else:
                entry.reason = f"no recipe in configs/ for {kind} ({KIND_DATA[kind]})"
        if entry.config:
            try:
                cfg = genlab.load_config(
                    entry.config, [*entry.overrides, *_eval(kind, entry.family)]
                )
                # what refers outside the run (a second stage's first) resolves, or fails here
                cls.bind(cfg.model, genlab.api.load_data(cfg))
                splits[family] = (cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
            except GenlabError as e:
                entry.reason, entry.config = f"its recipe does not build here: {e}", ""
        if entry.config:
            plan.entries.append(entry)
        else:
            entry.status = "skipped"
            plan.skipped.append(entry)
    if not plan.entries:
        raise ConfigError(f"no registered family has a recipe for {data!r} ({kind})")
    _one_split(plan, splits)
    return plan


def _one_split(plan: Plan, splits: dict[str, tuple[float, float, int]]) -> None:
    """Every family trains, selects and is evaluated on the same split of the data: the one most
    of their recipes use (the first recipe's on a tie) is given to the others as overrides, so no
    family is scored on other test examples (or trains on another's)."""
    common = Counter(splits[e.family] for e in plan.entries).most_common(1)[0][0]
    val, test, seed = common
    for e in plan.entries:
        if splits[e.family] != common:
            e.overrides += [f"data.val_fraction={val}", f"data.test_fraction={test}",
                            f"data.seed={seed}"]  # fmt: skip


def _eval(kind: str, family: str) -> list[str]:
    """The same evaluation for every family of a data kind (ODE likelihoods at the board's
    tolerance, where the family declares the tolerances as likelihood options)."""
    from genlab.registry import MODELS

    n = EVAL_N[kind]
    declared = {o.name for o in MODELS.get(family).likelihood_options}
    ode = [f"eval.nll_options.{k}={ODE_TOLERANCE}" for k in ("rtol", "atol") if k in declared]
    return ["eval.seeds=1", f"eval.nll_n={NLL_N[kind]}", *([f"eval.n={n}"] if n else []), *ode]


def probe_rate(entry: Entry, kind: str) -> float:
    """Training steps per second of the recipe (after one warm-up step), through the trainer."""
    import genlab
    from genlab.train.trainer import Trainer

    quiet = ["trainer.progress=false", "trainer.tensorboard=false"]
    cfg = genlab.load_config(entry.config, [*entry.overrides, *_eval(kind, entry.family), *quiet])
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.api.build_model(cfg, dataset)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(model, dataset, cfg, d)
        trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(PROBE_STEPS):
            trainer.train_step()
        return PROBE_STEPS / max(time.perf_counter() - t0, 1e-6)


def run(
    data: str,
    budget_minutes: float,
    out: str | Path,
    *,
    families: list[str] | None = None,
    log=print,
) -> Path:
    """Train, evaluate and rank; resumable. Returns ``out/index.html``."""
    import genlab

    out = Path(out)
    state = out / "leaderboard.json"
    if state.is_file():
        plan = _load_plan(state)
        if plan.data != data:
            raise ConfigError(f"{out} holds a leaderboard of {plan.data!r}, not {data!r}: give "
                              "another --out")  # fmt: skip
        if not math.isclose(plan.budget_s, budget_minutes * 60.0, rel_tol=1e-9):
            raise ConfigError(
                f"{out} holds a leaderboard planned for {plan.budget_s / 60:g} minutes, not "
                f"{budget_minutes:g}: resume it with --budget-minutes {plan.budget_s / 60:g}, or "
                "give another --out for a new budget"
            )
        log(f"resuming the leaderboard in {out}")
    else:
        plan = make_plan(data, budget_minutes, families)
        out.mkdir(parents=True, exist_ok=True)
        _save_plan(plan, state)
    for e in plan.skipped:
        log(f"  skip {e.family}: {e.reason}")
    for i, e in enumerate(plan.entries):
        run_dir = out / "runs" / e.family
        head = f"[{i + 1}/{len(plan.entries)}] {e.family}"
        if e.status == "done" and (run_dir / "metrics.json").is_file():
            log(f"{head}: done ({e.steps} steps)")
            continue
        if e.status == "failed":
            log(f"{head}: failed before ({e.reason})")
            continue
        share = plan.budget_s / len(plan.entries)  # equal for every family, fixed by the plan
        t0 = time.perf_counter()
        try:
            cfg_steps = genlab.load_config(e.config, e.overrides).trainer.steps
            if e.steps is None:
                rate = probe_rate(e, plan.kind)
                e.steps = int(max(1, min(cfg_steps, math.floor(rate * TRAIN_SHARE * share))))
                e.status = "training"
                _save_plan(plan, state)
            resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
            log(f"{head}: {Path(e.config).name}, {e.steps} steps (of the recipe's {cfg_steps}) "
                f"in a share of {share / 60:.1f} min" + (", resuming" if resume else ""))  # fmt: skip
            genlab.train(
                e.config, run_dir, resume=resume, verbose=False,
                overrides=[*e.overrides, *_eval(plan.kind, e.family), f"trainer.steps={e.steps}",
                           f"trainer.checkpoint_every={max(1, e.steps // 4)}"],
            )  # fmt: skip
            e.status = "done"
        except KeyboardInterrupt:
            e.seconds += time.perf_counter() - t0
            _save_plan(plan, state)
            raise
        except GenlabError as err:
            e.status, e.reason = "failed", str(err)
            log(f"{head}: failed: {err}")
        e.seconds += time.perf_counter() - t0
        _save_plan(plan, state)
        log(f"{head}: {e.status} in {e.seconds / 60:.1f} min")
    return write(plan, out)


def write(plan: Plan, out: Path) -> Path:
    """The ranking (``leaderboard.md``) and the report of every run, ranked first."""
    from genlab.report import SPLIT_LABELS, likelihood_note, read_run, write_report

    rows = [read_run(out / "runs" / e.family) for e in plan.entries]
    metric = RANK_BY[plan.kind]

    def score(row) -> float:
        entry = row.metrics.get(metric)
        return float(entry["value"]) if entry else math.inf

    order = sorted(range(len(rows)), key=lambda k: score(rows[k]))
    rows = [rows[k] for k in order]
    page = write_report(rows, out)
    lines = [f"# Leaderboard: {plan.data} ({plan.kind}), {plan.budget_s / 60:g} CPU minutes", "",
             f"Ranked by {metric} (lower is better); every family had an equal share of the "
             f"budget. Measured on: {measured(rows, SPLIT_LABELS)}. The full report: index.html, "
             "report.md.", "",
             f"| rank | family | {metric} | nll (nats) | steps | minutes | status |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for rank, k in enumerate(order, 1):
        e, row = plan.entries[k], rows[rank - 1]
        m, nll = row.metrics.get(metric), row.metrics.get("nll")
        val = f"{m['value']:.4g}" if m else "—"
        nll_s = f"{nll['value']:.4g} ({nll['kind']})" if nll else "n/a" if row.evaluated else "—"
        lines.append(f"| {rank} | {e.family} | {val} | {nll_s} | {e.steps} | "
                     f"{e.seconds / 60:.1f} | {e.status}{': ' + e.reason if e.reason else ''} |")  # fmt: skip
    for e in plan.skipped:
        lines.append(f"| — | {e.family} | — | — | — | — | skipped: {e.reason} |")
    notes = [(plan.entries[k].family, note) for k, row in zip(order, rows, strict=True)
             if (note := likelihood_note(row))]  # fmt: skip
    if notes:
        lines += ["", "What each nll is of. Likelihoods compare only between rows that represent "
                  "the data alike (the same levels, binarized or not, pixels or codes):", ""]  # fmt: skip
        lines += [f"- {family}: {note}" for family, note in notes]
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return page


def measured(rows: list[Any], labels: dict[str, str]) -> str:
    """The parts of the data the rows' figures were measured on (the test split, normally)."""
    splits = sorted({row.split for row in rows if row.split})
    return ", ".join(labels.get(s, s) for s in splits) or "nothing yet (no run evaluated)"


def _save_plan(plan: Plan, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(plan), indent=1), encoding="utf-8")
    tmp.replace(path)


def _load_plan(path: Path) -> Plan:
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        entries = [Entry(**e) for e in raw.pop("entries")]
        skipped = [Entry(**e) for e in raw.pop("skipped")]
        return Plan(**raw, entries=entries, skipped=skipped)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{path} is damaged ({e}); remove it to plan the leaderboard anew") from e


__all__ = ["Entry", "Plan", "make_plan", "run", "write"]
