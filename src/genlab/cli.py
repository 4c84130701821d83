"""The ``genlab`` command line: train, sample, eval, list.

Every error a user can cause is printed as one clear line (exit status 2); an unexpected failure
prints a short message too (set ``GENLAB_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

USAGE_EXAMPLES = """examples:
  genlab train configs/flow-matching-moons.yaml trainer.steps=3000 model.hidden=128 --out runs/moons
  genlab train configs/flow-matching-moons.yaml data.path=points.npy --out runs/mine
  genlab sample runs/demo --n 5000 --sampler euler --steps 10 --out samples.npy
  genlab eval runs/demo
  genlab eval runs/mine --data heldout.npy --json
  genlab list
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genlab",
        description="Train, sample and evaluate deep generative models.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a YAML config (+ key=value overrides)")
    t.add_argument("config", help="a YAML config, e.g. configs/flow-matching-moons.yaml")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.steps=3000")
    t.add_argument("--out", help="run directory (default: runs/<name>)")
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="a run directory")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--sampler", help="sampler name (see `genlab list`); default: the model's")
    s.add_argument("--steps", type=int, help="number of steps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples.npy", help="output .npy (or .png for a plot)")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--schedule", help="diffusion: σ grid (uniform, karras, log-snr)")
    s.add_argument("--guidance", type=float, help="diffusion: classifier-free guidance scale")
    s.add_argument("--label", type=int, help="class-conditional models: the class to sample")
    s.add_argument("--classifier", help="diffusion: a noise-classifier run for classifier guidance")
    s.add_argument("--classifier-scale", type=float, default=1.0, help="classifier guidance scale")
    s.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. eta=0.5, s_churn=40, snr=0.16 (repeatable)",
    )

    r = sub.add_parser(
        "reflow", help="rectified flow: retrain a flow-matching run on its own pairs"
    )
    r.add_argument("run", help="a trained linear-path (flow-matching) run directory")
    r.add_argument("overrides", nargs="*", help="key=value overrides for the new run")
    r.add_argument("--out", required=True, help="the new run directory")
    r.add_argument("--pairs", type=int, default=20_000, help="number of (noise, sample) pairs")
    r.add_argument("--sampler", default="dopri5", help="sampler that draws the pairs")
    r.add_argument("--steps", type=int, help="its steps")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")

    e = sub.add_parser("eval", help="evaluate a trained run (W2, sliced W2, MMD, energy, NLL)")
    e.add_argument("run", help="a run directory")
    e.add_argument("--data", help="held-out .npy/.npz/.csv to compare with (default: the true law)")
    e.add_argument("--n", type=int, help="samples per seed")
    e.add_argument("--seeds", type=int, help="number of sampling seeds")
    e.add_argument("--sampler", help="sampler name")
    e.add_argument("--steps", type=int, help="number of steps")
    e.add_argument("--schedule", help="diffusion: σ grid (uniform, karras, log-snr)")
    e.add_argument("--json", action="store_true", help="print the report as JSON")

    sub.add_parser("list", help="list the datasets, models, samplers and metrics that exist")
    return p


def _interrupt(signum, frame):  # SIGTERM: stop like Ctrl-C (the trainer saves a checkpoint)
    raise KeyboardInterrupt


def cmd_train(args: argparse.Namespace) -> int:
    import genlab

    signal.signal(signal.SIGTERM, _interrupt)
    run = genlab.train(
        args.config,
        out=args.out,
        overrides=list(args.overrides),
        resume=args.resume,
        evaluate=not args.no_eval,
    )
    from genlab.train.distributed import from_env

    if from_env().is_main:
        print(f"run written to {run.dir}/")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import genlab
    from genlab.errors import GenlabError

    if args.n < 1:
        raise GenlabError(f"--n must be at least 1, got {args.n}")
    run = genlab.load_run(args.run, ema=not args.raw)
    g = torch.Generator().manual_seed(args.seed)
    extra = _sample_options(args, run.model)
    out = run.model.sample(args.n, sampler=args.sampler, steps=args.steps, generator=g, **extra)
    x = out.x.cpu().numpy()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        from genlab.eval.plots import plot_image_grid, plot_samples

        if out.x.dim() == 4:
            plot_image_grid(out.x.clamp(-1, 1), path=path)
        else:
            plot_samples(out.x, path=path, title=f"{args.n} samples, NFE {out.nfe}")
    else:
        if path.suffix != ".npy":
            raise GenlabError(f"--out must end in .npy or .png, got {path.name}")
        np.save(path, x)
    print(f"wrote {args.n} samples {tuple(x.shape[1:])} to {path} (NFE {out.nfe})")
    return 0


def _sample_options(args: argparse.Namespace, model) -> dict:
    """The diffusion-only sampling options given on the command line, checked."""
    import genlab
    from genlab.errors import GenlabError
    from genlab.models.diffusion import Diffusion

    extra: dict = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GenlabError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            extra[key] = float(value)
        except ValueError:
            raise GenlabError(f"--option {key}: a number is expected, got {value!r}") from None
    named = {"schedule": args.schedule, "guidance": args.guidance, "y": args.label}
    extra.update({k: v for k, v in named.items() if v is not None})
    if args.classifier:
        extra["classifier"] = genlab.load_run(args.classifier).model
        extra["classifier_scale"] = args.classifier_scale
    if extra and not isinstance(model, Diffusion):
        flags = ", ".join(sorted(extra))
        raise GenlabError(f"{model.family} models do not take these sampling options: {flags}")
    return extra


def cmd_reflow(args: argparse.Namespace) -> int:
    import genlab

    run = genlab.reflow(
        args.run, args.out, pairs=args.pairs, sampler=args.sampler, steps=args.steps,
        seed=args.seed, overrides=args.overrides, evaluate=not args.no_eval,
    )  # fmt: skip
    print(f"run written to {run.dir}/")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    import genlab
    from genlab.eval.evaluate import format_report

    run = genlab.load_run(args.run)
    changes = {
        k: v
        for k, v in {
            "n": args.n,
            "seeds": args.seeds,
            "sampler": args.sampler,
            "steps": args.steps,
            "schedule": args.schedule,
        }.items()
        if v is not None
    }
    cfg = dataclasses.replace(run.config.eval, **changes)
    for k in ("n", "seeds", "steps"):
        if getattr(cfg, k) is not None and getattr(cfg, k) < 1:
            raise genlab.GenlabError(f"--{k} must be at least 1, got {getattr(cfg, k)}")
    report = genlab.evaluate_run(run, held_out=args.data, cfg=cfg)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import genlab  # noqa: F401  (registers everything)
    import genlab.data  # noqa: F401
    import genlab.eval.metrics  # noqa: F401
    from genlab.registry import ALL

    for kind, reg in ALL.items():
        print(f"{kind}:")
        for entry in reg:
            print(f"  {entry.name:<16} {entry.help}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "list": cmd_list,
    "reflow": cmd_reflow,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from genlab.errors import GenlabError

    try:
        return COMMANDS[args.command](args)
    except GenlabError as e:
        print(f"genlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        extra = (
            " (a checkpoint was saved; continue with --resume)" if args.command == "train" else ""
        )
        print(f"genlab {args.command}: interrupted{extra}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a bare traceback from the CLI
        if os.environ.get("GENLAB_DEBUG"):
            raise
        print(
            f"genlab {args.command}: internal error: {type(e).__name__}: {e}\n"
            "(this is a bug in genlab; set GENLAB_DEBUG=1 to see the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
