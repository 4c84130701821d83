"""The Python entry points: the CLI is a thin shell over these.

>>> import genlab
>>> cfg = genlab.load_config("configs/flow-matching-moons.yaml", ["trainer.steps=3000"])
>>> run = genlab.train(cfg, out="runs/moons")
>>> x = run.model.sample(2000, sampler="euler", steps=10).x
>>> genlab.evaluate(run)["metrics"]["w2"]["mean"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab import config as config_mod
from genlab.config import Config, EvalConfig
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, DataError
from genlab.eval.evaluate import evaluate as evaluate_model
from genlab.eval.evaluate import format_report
from genlab.models.base import GenerativeModel, ModelSpec
from genlab.registry import MODELS
from genlab.train import checkpoint as ckpt
from genlab.train import distributed
from genlab.train.trainer import Trainer, TrainResult


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A :class:`Config` from a YAML file (or the defaults) and ``key=value`` overrides."""
    return config_mod.load(path, overrides)


def load_data(cfg: Config) -> Dataset:
    """The dataset a config names (``data.path`` wins over ``data.name``)."""
    from genlab.data import load

    d = cfg.data
    if d.path is not None:
        return load(path=d.path, val_fraction=d.val_fraction, seed=d.seed, **d.options)
    return load(d.name, n=d.n, val_fraction=d.val_fraction, seed=d.seed, **d.options)


def build_model(cfg: Config, spec_or_dataset: ModelSpec | Dataset) -> GenerativeModel:
    """A fresh model of ``cfg``'s family for the dataset's shape (or a saved spec)."""
    if isinstance(spec_or_dataset, Dataset):
        shape, classes = spec_or_dataset.shape, spec_or_dataset.num_classes
    else:
        shape, classes = spec_or_dataset.shape, spec_or_dataset.num_classes
    return MODELS.get(cfg.family).from_config(cfg.model, shape, classes)


@dataclass
class Run:
    """A run directory with its config and model (carrying the EMA weights when there are any)."""

    dir: Path
    config: Config
    model: GenerativeModel
    step: int
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_data(self.config)
        return self._dataset


def train(
    cfg: Config | str | Path,
    out: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    evaluate: bool = True,
    verbose: bool = True,
) -> Run:
    """Train a model as ``cfg`` says into ``out`` (default ``runs/<name>``); evaluate it at the end,
    writing ``metrics.json``, ``samples.png`` and (for 2-D data) ``trajectories.png``."""
    if not isinstance(cfg, Config):
        saved = Path(out) / "config.yaml" if out is not None else None
        if resume and saved is not None and saved.is_file():
            cfg = saved  # the run's own resolved config; overrides may extend it (more steps)
        cfg = load_config(cfg, overrides)
    run_dir = Path(out) if out is not None else Path("runs") / cfg.name
    dataset = load_data(cfg)
    torch.manual_seed(cfg.trainer.seed)  # the initial weights
    model = build_model(cfg, dataset)
    trainer = Trainer(model, dataset, cfg, run_dir, evaluate_fn=_periodic_eval)
    try:
        result: TrainResult = trainer.fit(resume=resume, stop_at=stop_at)
    finally:
        distributed.teardown(trainer.dist)
    if not trainer.dist.is_main:  # under torchrun, rank 0 alone reports and evaluates
        return Run(run_dir, cfg, trainer.model, result.step, dataset)
    if verbose:
        print(
            f"trained {result.step} steps in {result.seconds:.1f} s "
            f"({result.steps_per_second:.0f} steps/s); final loss {result.final_loss:.4f}"
        )
    model = trainer.model
    best = ckpt.checkpoint_paths(trainer.checkpoint_dir, ckpt.BEST)[1]
    if best.is_file():  # validation was tracked: evaluate the best weights, not the last
        model = load_run(run_dir, checkpoint=ckpt.BEST, device=trainer.device).model
        if verbose:
            print(f"using the best checkpoint (validation loss {trainer.best_val:.4f})")
    elif trainer.ema is not None:
        with torch.no_grad():
            torch._foreach_copy_(trainer.params, trainer.ema)
    run = Run(run_dir, cfg, model, result.step, dataset)
    if evaluate and (result.step >= cfg.trainer.steps or trainer.stopped_early):
        report = evaluate_run(run, write=True)
        if verbose:
            print(format_report(report))
    return run


def _periodic_eval(trainer: Trainer) -> dict[str, float]:
    cfg = trainer.cfg.eval
    quick = EvalConfig(
        n=cfg.n, seeds=1, sampler=cfg.sampler, steps=cfg.steps, metrics=["w2"], nll=False
    )
    report = evaluate_model(trainer.model, trainer.dataset, quick, keep_samples=True)
    _plot_samples(trainer.run_dir / "samples" / f"step_{trainer.step:07d}.png", report)
    return {f"eval_{k}": v["mean"] for k, v in report["metrics"].items()}


def _plot_samples(path: Path, report: dict[str, Any]) -> None:
    from genlab.eval.plots import plot_image_grid, plot_samples

    x = report.get("_samples")
    if x is None:
        return
    if x.dim() == 2:
        plot_samples(x, report["_reference"], path=path, title=_title(report))
    elif x.dim() == 4:
        plot_image_grid(x[:64].clamp(-1, 1), path=path)


def _title(report: dict[str, Any]) -> str:
    w2 = report["metrics"].get("w2", {}).get("mean")
    w2s = f", W2 {w2:.3f}" if w2 is not None else ""
    return f"{report['family']}: {report['sampler']}, NFE {report['nfe']:.0f}{w2s}"


def load_run(
    run_dir: str | Path,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    checkpoint: str | int = "auto",
) -> Run:
    """Rebuild a trained model from its run directory alone: its config and a checkpoint
    (``"auto"``: the best by validation loss when validation was tracked, else the newest good one;
    ``"last"``, ``"best"`` or a step number)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a genlab run: it has no config.yaml")
    cfg = load_config(cfg_path)
    directory = run_dir / "checkpoints"
    if checkpoint == "auto":
        has_best = ckpt.checkpoint_paths(directory, ckpt.BEST)[1].is_file()
        checkpoint = ckpt.BEST if has_best else "last"
    if checkpoint == "last":
        found = ckpt.load_latest(directory)
    else:
        found = ckpt.load_checkpoint(directory, checkpoint)
    if found is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet (checkpoints/ is empty)")
    tensors, meta = found
    spec = ModelSpec.from_dict(meta["spec"])
    model = build_model(cfg, spec)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if prefix == "ema.":  # buffers are not averaged: take them from the raw weights
        for k, v in tensors.items():
            if k.startswith("model.") and k[6:] not in state:
                state[k[6:]] = v
    ckpt.load_state_dict_checked(model, state, f"{run_dir} step {meta['step']}")
    model.to(device).eval()
    return Run(run_dir, cfg, model, int(meta["step"]))


def load_points(path: str | Path) -> torch.Tensor:
    """All points of a held-out file (train and validation parts together)."""
    from genlab.data import load

    ds = load(path=str(path), val_fraction=0.0)
    if ds.kind != "points":
        raise DataError(f"{path} holds {ds.kind}, not points")
    return ds.train


def evaluate_run(
    run: Run,
    *,
    held_out: str | Path | torch.Tensor | None = None,
    cfg: EvalConfig | None = None,
    write: bool = False,
) -> dict[str, Any]:
    """Evaluate a run (against its data's true law, or ``held_out`` points) and optionally write
    ``metrics.json``, ``samples.png`` and ``trajectories.png`` into the run directory."""
    cfg = cfg or run.config.eval
    pts = load_points(held_out) if isinstance(held_out, (str, Path)) else held_out
    dataset = run.dataset if pts is None else None
    report = evaluate_model(run.model, dataset, cfg, held_out=pts, keep_samples=True)
    if write:
        _plot_samples(run.dir / "samples.png", report)
        if run.model.spec.shape == (2,):
            from genlab.eval.plots import plot_trajectories

            g = torch.Generator().manual_seed(0)
            traj = run.model.sample(
                300,
                sampler="euler" if (cfg.sampler or "") != "dopri5" else "dopri5",
                steps=cfg.steps or 100,
                generator=g,
                trajectory=True,
            ).trajectory
            plot_trajectories(traj, path=run.dir / "trajectories.png")
    report.pop("_samples", None)
    report.pop("_reference", None)
    if write:
        (run.dir / "metrics.json").write_text(json.dumps(report, indent=1))
    return report


def evaluate(run: Run | str | Path, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a :class:`Run` or a run directory; see :func:`evaluate_run`."""
    if not isinstance(run, Run):
        run = load_run(run)
    return evaluate_run(run, **kwargs)
