"""The Python entry points: the CLI is a thin shell over these.

>>> import genlab
>>> cfg = genlab.load_config("configs/flow-matching-moons.yaml", ["trainer.steps=3000"])
>>> run = genlab.train(cfg, out="runs/moons")
>>> x = run.model.sample(2000, sampler="euler", steps=10).x
>>> genlab.evaluate(run)["metrics"]["w2"]["mean"]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab import config as config_mod
from genlab.config import Config, EvalConfig
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, ConfigError, DataError
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
        ds = load(path=d.path, val_fraction=d.val_fraction, seed=d.seed, **d.options)
    else:
        ds = load(d.name, n=d.n, val_fraction=d.val_fraction, seed=d.seed, **d.options)
    if d.pairs is None:
        return ds
    pairs = load(path=d.pairs, val_fraction=d.val_fraction, seed=d.seed)
    if pairs.noise_train is None:
        raise DataError(
            f"data.pairs={d.pairs!r} has no 'noise' array (write it with genlab reflow)"
        )
    if pairs.shape != ds.shape:
        raise DataError(f"data.pairs holds examples of shape {pairs.shape}, the data {ds.shape}")
    return dataclasses.replace(
        ds, train=pairs.train, val=pairs.val, labels_train=pairs.labels_train,
        labels_val=pairs.labels_val, noise_train=pairs.noise_train, noise_val=pairs.noise_val,
    )  # fmt: skip


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
    if cfg.trainer.init_from and not resume:
        teacher = load_run(cfg.trainer.init_from, device="cpu").model
        ckpt.load_state_dict_checked(
            model, teacher.state_dict(), f"trainer.init_from={cfg.trainer.init_from}"
        )
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


def reflow(
    run_dir: str | Path,
    out: str | Path,
    *,
    pairs: int = 20_000,
    sampler: str = "dopri5",
    steps: int | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    evaluate: bool = True,
    verbose: bool = True,
) -> Run:
    """Rectified flow's reflow (Liu et al. 2023, "Flow straight and fast"): draw ``pairs`` (noise,
    sample) pairs from the linear-path model in ``run_dir`` with ``sampler``, write them to
    ``out/pairs.npz``, and train a new model on them (``model.coupling=pairs``), starting from the
    old weights. Its paths are straighter, so it samples well in 1-2 steps; the straightness of
    both models is printed and stored in ``out/reflow.json``."""
    import numpy as np
    import yaml

    teacher = load_run(run_dir)
    model = teacher.model
    if getattr(getattr(model, "process", None), "name", None) != "linear":
        raise ConfigError(f"reflow needs a linear-path model (flow matching); {run_dir} is not one")
    if pairs < 2:
        raise ConfigError(f"--pairs must be at least 2, got {pairs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    xs, zs, ys = [], [], []
    for start in range(0, pairs, 5000):
        k = min(5000, pairs - start)
        z = torch.randn((k, *model.spec.shape), generator=g)
        res = model.sample(k, sampler=sampler, steps=steps, noise=z, generator=g)
        xs.append(res.x.float().cpu()), zs.append(z)
        if res.y is not None:
            ys.append(res.y.cpu())
    arrays = {"x": torch.cat(xs).numpy(), "noise": torch.cat(zs).numpy()}
    if ys:
        arrays["y"] = torch.cat(ys).numpy()
    np.savez(out / "pairs.npz", **arrays)
    before = model.straightness(2000, generator=torch.Generator().manual_seed(1))
    raw = teacher.config.to_dict()
    raw["name"] = f"{teacher.config.name}-reflow"
    raw["model"]["coupling"] = "pairs"
    raw["data"]["pairs"] = str((out / "pairs.npz").resolve())
    raw["trainer"]["init_from"] = str(Path(run_dir).resolve())
    path = out / "reflow.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path, overrides)
    if verbose:
        print(f"wrote {pairs} (noise, sample) pairs to {out / 'pairs.npz'} ({sampler})")
    run = train(cfg, out, evaluate=evaluate, verbose=verbose)
    after = run.model.straightness(2000, generator=torch.Generator().manual_seed(1))
    info = {
        "pairs": pairs,
        "sampler": sampler,
        "straightness_before": before,
        "straightness_after": after,
    }
    (out / "reflow.json").write_text(json.dumps(info, indent=1))
    if verbose:
        print(f"straightness: {before:.4f} before reflow, {after:.4f} after (0: straight paths)")
    return run
