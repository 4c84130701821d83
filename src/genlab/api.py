"""The Python entry points: the CLI is a thin shell over these.

>>> import genlab
>>> cfg = genlab.load_config("configs/flow-matching-moons.yaml", ["trainer.steps=3000"])
>>> run = genlab.train(cfg, out="runs/moons")
>>> x = run.model.sample(2000, sampler="euler", steps=10).x
>>> genlab.evaluate(run)["metrics"]["w2"]["mean"]
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab import config as config_mod
from genlab.config import Config, EvalConfig
from genlab.data.base import Dataset
from genlab.errors import ConfigError, DataError
from genlab.eval.evaluate import EvalReport, check_can_evaluate
from genlab.eval.evaluate import evaluate as evaluate_model
from genlab.eval.table import format_report
from genlab.io import atomic_write_bytes, load_state_dict_checked
from genlab.registry import DATASETS
from genlab.runs import Run, build_model, load_config, load_data, load_run
from genlab.train import distributed
from genlab.train.trainer import Trainer, TrainResult


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
        own = resume and saved is not None and saved.is_file()
        if own:
            if Path(cfg).resolve() != saved.resolve():
                check_resume_agrees(cfg, saved, overrides)
            cfg = saved  # the run's own resolved config; overrides may extend it (more steps)
        cfg = load_config(cfg, overrides, saved=own)
    resolve_paths(cfg)
    run_dir = Path(out) if out is not None else Path("runs") / cfg.name
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {str(run_dir)!r} is a file; give a folder for the run")
    dataset = load_data(cfg)
    torch.manual_seed(cfg.trainer.seed)  # the initial weights
    model = build_model(cfg, dataset, resume=resume)
    if evaluate:  # fail now, not after training, if the final evaluation could not run
        check_can_evaluate(dataset, cfg.eval, model.has_log_prob)
        model.resolve_options(cfg.eval.options)
    if cfg.trainer.init_from and not resume:
        teacher = load_run(cfg.trainer.init_from, device="cpu").model
        load_state_dict_checked(
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
        print(_trained_line(result, cfg.trainer.steps))
    model = trainer.model
    best = ckpt.checkpoint_paths(trainer.checkpoint_dir, ckpt.BEST)[1]
    if best.is_file():  # validation was tracked: evaluate the best weights, not the last
        model = load_run(run_dir, checkpoint=ckpt.BEST, device=trainer.device).model
        if verbose:
            print(f"using the best checkpoint (validation loss {trainer.best_val:.4f})")
    else:
        trainer.use_ema_weights()  # sample and evaluate with the EMA weights, as load_run does
    run = Run(run_dir, cfg, model, result.step, dataset)
    if evaluate and (result.step >= cfg.trainer.steps or trainer.stopped_early):
        report = evaluate_run(run, write=True)
        if verbose:
            print(format_report(report))
    return run


#: what a resumed run may change: how long it trains, what it logs and checkpoints, where it runs,
#: and (``eval.*``) how it is evaluated; anything else would make it another run
RESUMABLE = (
    "name", "trainer.steps", "trainer.log_every", "trainer.eval_every", "trainer.checkpoint_every",
    "trainer.keep_last", "trainer.progress", "trainer.progress_every", "trainer.tensorboard",
    "trainer.threads",
    "trainer.device", "eval.",
)  # fmt: skip


def check_resume_agrees(path: str | Path, saved: Path, overrides: list[str] | None) -> None:
    """``--resume`` with a config file: every key that file (and the overrides) sets must agree with
    the run's own config, but for those a resume may change (:data:`RESUMABLE`); a
    :class:`ConfigError` names the keys that differ."""
    import yaml

    given = load_config(path, overrides)
    resolve_paths(given)
    theirs = _flat(given.to_dict())
    ours = _flat(load_config(saved, saved=True).to_dict())
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    named = set(_flat(raw)) | {o.partition("=")[0].strip() for o in overrides or []}
    differ = sorted(
        k for k in named
        if k in theirs and theirs[k] != ours.get(k) and not k.startswith(RESUMABLE)
    )  # fmt: skip
    if differ:
        shown = "; ".join(
            f"{k}: {ours.get(k)!r} in the run, {theirs[k]!r} given" for k in differ[:4]
        )
        if len(differ) > 4:
            shown += f"; and {', '.join(differ[4:])}"
        raise ConfigError(
            f"--resume: {path} with these overrides does not describe the run in {saved.parent} "
            f"({shown}); resume with the run's own config ({saved}) and only the keys a resume "
            "may change (trainer.steps, logging, checkpointing, eval.*), or train into a new --out"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not prefix.endswith("options."):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


#: config keys that name files or run directories: stored absolute, so that a run trained in one
#: directory can be resumed, evaluated and sampled from any other
PATH_KEYS = (("data", "path"), ("data", "pairs"), ("trainer", "init_from"), ("eval", "features"),
             ("eval", "scorer"))  # fmt: skip


def resolve_paths(cfg: Config) -> None:
    """Make the relative paths of ``cfg`` (:data:`PATH_KEYS`) absolute, from the current directory."""
    for section, key in PATH_KEYS:
        part = getattr(cfg, section)
        value = getattr(part, key, None)
        if isinstance(value, str) and value:
            setattr(part, key, str(Path(value).expanduser().absolute()))
    autoencoder = getattr(cfg.model, "autoencoder", None)
    if isinstance(autoencoder, str) and autoencoder:
        cfg.model = dataclasses.replace(
            cfg.model, autoencoder=str(Path(autoencoder).expanduser().absolute())
        )


def _trained_line(result: TrainResult, total: int) -> str:
    """What a training invocation did: the steps trained now (a resumed run counts from where it
    resumed), their time and rate, and the final loss; or that there was nothing left to train."""
    if result.steps_trained == 0:
        return f"nothing to train: the run is at step {result.step} of its {total} steps"
    done = f"trained {result.steps_trained} steps"
    if result.steps_trained != result.step:
        done += f" (steps {result.step - result.steps_trained + 1}-{result.step})"
    return (
        f"{done} in {result.seconds:.1f} s ({_rate(result.steps_per_second)}); "
        f"final loss {result.final_loss:.4f}"
    )


def _rate(steps_per_second: float) -> str:
    """``"12 steps/s"`` or, for slow runs, ``"4.01 s/step"`` (never a rate rounded to 0)."""
    if steps_per_second >= 10:
        return f"{steps_per_second:.0f} steps/s"
    if steps_per_second >= 1:
        return f"{steps_per_second:.1f} steps/s"
    return f"{1.0 / max(steps_per_second, 1e-12):.3g} s/step"


def _periodic_eval(trainer: Trainer) -> dict[str, float]:
    """A quick look while training: W2 for points (one seed, no floor) and, on a mixture with known
    modes, the modes covered, with a warning when modes are lost (mode collapse); a sample plot
    for all."""
    cfg = trainer.cfg.eval
    data = trainer.dataset
    points = data.kind == "points"
    metrics = ["w2"] if points else []
    if points and data.modes() is not None:
        metrics += ["modes_covered", "high_quality"]
    quick = dataclasses.replace(
        cfg, n=cfg.n if points else min(cfg.n, 64), seeds=1, metrics=metrics, nll=False,
        floor=False,
    )  # fmt: skip
    report = evaluate_model(trainer.model, data, quick, keep_samples=True)
    _plot_samples(trainer.run_dir / "samples" / f"step_{trainer.step:07d}.png", report)
    out = {f"eval_{k}": v["value"] for k, v in report.metrics.items()}
    modes = out.get("eval_modes_covered")
    if modes is not None:
        seen = trainer.eval_history.setdefault("modes_covered", [])
        if seen and modes < max(seen):
            from tqdm.auto import tqdm

            tqdm.write(
                f"step {trainer.step}: {modes:.0f} modes covered, down from {max(seen):.0f} "
                "(mode collapse?)"
            )
        seen.append(modes)
    return out


def _plot_samples(path: Path, report: EvalReport) -> None:
    from genlab.eval.plots import plot_image_grid, plot_samples

    x = report.samples
    if x is None:
        return
    if x.dim() == 2:
        plot_samples(x, report.reference, path=path, title=_title(report))
    elif x.dim() == 4:
        plot_image_grid(x[:64].clamp(-1, 1), path=path)


def _title(report: EvalReport) -> str:
    w2 = report.metrics.get("w2", {}).get("value")
    w2s = f", W2 {w2:.3f}" if w2 is not None else ""
    sampler = (report.options or {}).get("sampler")
    how = f"{sampler}, " if sampler else ""
    return f"{report.family}: {how}NFE {report.nfe or 0:.0f}{w2s}"


def load_reference(path: str | Path, like: Dataset) -> Dataset:
    """Held-out data from a file or folder to evaluate a run against: all of its examples (no
    split). Text is encoded with the run's tokenizer (a character that a ``char`` tokenizer
    lacks becomes its escape)."""
    from genlab.data import load
    from genlab.data.base import require_file
    from genlab.data.text import decode_utf8, text_tokens

    if like.kind == "tokens":
        p = require_file(path)
        return text_tokens(p.stem, decode_utf8(p.read_bytes(), str(p)), like.meta["vocab"], str(p))
    return load(path=str(path), val_fraction=0.0, test_fraction=0.0)


def evaluate_run(
    run: Run,
    *,
    held_out: str | Path | torch.Tensor | Dataset | None = None,
    cfg: EvalConfig | None = None,
    write: bool = False,
    features: Any = None,
    inception: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a run (against its data's true law or its own examples, or ``held_out``: a file,
    a folder, a Dataset or a tensor of points) and optionally write ``metrics.json``,
    ``samples.png`` and ``trajectories.png`` into the run directory. ``features``: a feature
    network ``(net, info)`` for images (default: genlab's cached one for the run's data).
    ``inception``: a local Inception weights file (a pickle: trust it) for torchmetrics' FID on
    the first seed's samples and reference (``report["inception_fid"]``). ``progress``: a line on
    stderr as each stage starts and ends (sampling per seed, features, the likelihood)."""
    cfg = cfg or run.config.eval
    if isinstance(held_out, (str, Path)):
        held_out = load_reference(held_out, run.dataset)
    elif isinstance(held_out, torch.Tensor):
        held_out = Dataset("held-out points", "points", held_out, held_out[:0])
    fid = None
    if inception is not None:
        from genlab.eval.inception import inception_fid, load_inception

        if run.dataset.kind != "images":
            raise DataError(f"--inception applies to images; {run.dir} holds {run.dataset.kind}")
        fid = load_inception(inception)
    report = evaluate_model(
        run.model, run.dataset, cfg, held_out=held_out, features=features, keep_samples=True,
        progress=progress,
    )  # fmt: skip
    if fid is not None:
        report.inception_fid = inception_fid(fid, report.samples, report.reference)
    if write:
        _plot_samples(run.dir / "samples.png", report)
        if run.model.spec.shape == (2,):
            _plot_paths(run, cfg)
    record = report.to_dict()
    if write:
        atomic_write_bytes(run.dir / "metrics.json", json.dumps(record, indent=1).encode())
    return record


def _plot_paths(run: Run, cfg: EvalConfig) -> None:
    """``trajectories.png``: paths from noise to data, for the families that record them (Euler
    with 100 steps for a diffusion model, unless it samples with dopri5)."""
    from genlab.eval.plots import plot_trajectories

    model = run.model
    allowed = model.options(cfg.options)
    if "trajectory" not in allowed:
        return
    opts = {**cfg.options, "trajectory": True}
    if "sampler" in allowed and model.resolve_options(cfg.options)["sampler"] != "dopri5":
        opts.update(sampler="euler", steps=cfg.options.get("steps") or 100)
        euler = model.options({"sampler": "euler"})
        opts = {k: v for k, v in opts.items() if k in euler}
    traj = model.sample(300, generator=torch.Generator().manual_seed(0), **opts).trajectory
    if traj is not None:
        plot_trajectories(traj, path=run.dir / "trajectories.png")


def features(data: str | Path | Dataset, *, train_if_missing: bool = True):
    """The feature network that image metrics use for ``data`` (a data set name, an image or IDX
    folder, or a Dataset): trained with genlab's fixed recipe on first use, then taken from the
    cache by the data's content hash. Returns its record (kind, held-out accuracy, hash, path)."""
    from genlab.data import load
    from genlab.feature_networks import feature_network

    if not isinstance(data, Dataset):
        if str(data) in DATASETS:
            data = load(str(data))
        elif Path(data).expanduser().exists():
            data = load(path=data)
        else:
            raise DataError(
                f"{DATASETS.unknown_message(str(data))}, and no file or folder {data!r}"
            )
    if data.kind != "images":
        raise DataError(f"{data.name!r} holds {data.kind}; feature networks are for images")
    return feature_network(data, train_if_missing=train_if_missing)[1]


def score(
    samples: str | Path | torch.Tensor,
    data: str | Path | Dataset,
    *,
    overrides: list[str] | None = None,
    n: int | None = None,
    seeds: int = 1,
    split: str = "test",
    metrics: list[str] | None = None,
    floor: bool = True,
    features: str | None = None,
    scorer: str | None = None,
    labels: torch.Tensor | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score samples from anywhere against ``data`` with the metrics of ``genlab eval`` and their
    real-data floors (:mod:`genlab.eval.score`). ``samples``: a file or folder
    (:func:`genlab.eval.score.read_samples`) or a tensor held as the data's examples are.
    ``data``: a run directory (its data, split as it was trained: the figures then equal
    ``genlab eval`` of the run on the same samples), a data set name, a file or folder, or a
    Dataset; ``overrides``: ``data.*`` keys (its split: ``data.test_fraction=0.3``). ``n``
    samples per seed (default: all of them over ``seeds``). Returns the ``metrics.json`` mapping,
    with ``"samples_given"`` naming the file and its sha256."""
    from genlab.eval.score import read_samples
    from genlab.eval.score import score as score_samples

    dataset, run_eval = _score_data(data, overrides or [])
    given = None
    if isinstance(samples, (str, Path)):
        samples, file_labels, given = read_samples(samples, dataset)
        labels = file_labels if labels is None else labels
    for name, value in (("n", n), ("seeds", seeds)):
        if value is not None and value < 1:
            raise DataError(f"{name} must be at least 1, got {value}")
    cfg = EvalConfig(
        n=n or max(len(samples) // seeds, 1), seeds=seeds, metrics=metrics, floor=floor,
        nll=False, features=features or (run_eval.features if run_eval else None),
        split=split, scorer=scorer,
    )  # fmt: skip
    report = score_samples(samples, dataset, cfg, labels=labels, given=given, progress=progress)
    return report.to_dict()


def _score_data(data: str | Path | Dataset, overrides: list[str]):
    """The data samples are scored against, and the evaluation config of the run it came from
    (None for a data set or a file)."""
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError(
            f"genlab score takes data.* overrides only (the data's split); got {bad[0]!r}"
        )
    if isinstance(data, Dataset):
        if overrides:
            raise ConfigError("data.* overrides apply to data given by name or path")
        return data, None
    path = Path(data).expanduser()
    if path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").exists():
        cfg = load_config(path / "config.yaml", overrides, saved=True)
        return load_data(cfg), cfg.eval
    if str(data) in DATASETS:
        cfg = load_config(None, [f"data.name={data}", *overrides])
    elif path.exists():
        cfg = load_config(None, ["data.name=null", f"data.path={path.resolve()}", *overrides])
    else:
        raise DataError(
            f"{DATASETS.unknown_message(str(data))}, and no file, folder or run {data!r}"
        )
    return load_data(cfg), None


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
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a new folder for the reflowed run")
    if (out / "config.yaml").exists() or ckpt.list_checkpoints(out / "checkpoints"):
        raise ConfigError(
            f"--out {str(out)!r} already holds a run; reflow starts a new one, so give a new folder "
            f"(an interrupted reflow continues with: genlab train {out / 'reflow.yaml'} --out "
            f"{out} --resume)"
        )
    raw = teacher.config.to_dict()
    raw["name"] = f"{teacher.config.name}-reflow"
    raw["model"]["coupling"] = "pairs"
    raw["data"]["pairs"] = str((out / "pairs.npz").absolute())
    raw["trainer"]["init_from"] = str(Path(run_dir).absolute())
    trial = copy.deepcopy(raw)
    for item in overrides or []:
        config_mod.apply_override(trial, item)
    config_mod.from_dict(trial)  # a bad override fails here, before anything is written
    model.resolve_options({"sampler": sampler, **({"steps": steps} if steps else {})})
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    xs, zs, ys = [], [], []
    for start in range(0, pairs, 5000):
        k = min(5000, pairs - start)
        z = torch.randn((k, *model.spec.shape), generator=g)
        res = model.sample(k, sampler=sampler, steps=steps, noise=z, generator=g)
        xs.append(res.x.float().cpu()), zs.append(z)
        if res.labels is not None:
            ys.append(res.labels.cpu())
    arrays = {"x": torch.cat(xs).numpy(), "noise": torch.cat(zs).numpy()}
    if ys:
        arrays["y"] = torch.cat(ys).numpy()
    np.savez(out / "pairs.npz", **arrays)
    before = model.straightness(2000, generator=torch.Generator().manual_seed(1))
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
