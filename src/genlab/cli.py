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
  genlab sample runs/glow --option temperature=0.7 --out glow.png
  genlab sample runs/gpt --n 1 --prompt "ROMEO:" --option length=500 --option top_p=0.9 --out romeo.txt
  genlab sample runs/mdlm --n 2 --infill "ROMEO: ____ my love ____." --out filled.txt   (each _ is filled)
  genlab eval runs/demo
  genlab eval runs/mine --data heldout.npy --json
  genlab eval runs/edm-digits --n 800 --option steps=10
  genlab score samples.npy --data runs/demo          (samples from anywhere, on eval's yardstick)
  genlab features mnist
  genlab list
"""


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """The sampling options every family may declare (see `genlab list`), as flags and as
    repeatable --option KEY=VALUE."""
    p.add_argument("--sampler", help="sampler name (see `genlab list`); default: the model's")
    p.add_argument("--steps", type=int, help="number of sampling steps")
    p.add_argument("--schedule", help="diffusion: σ grid (uniform, karras, log-snr)")
    p.add_argument("--guidance", type=float, help="diffusion: classifier-free guidance scale")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampling option of the model's family, e.g. eta=0.5, temperature=0.7 (repeatable; "
        "an unknown one lists those the family takes)",
    )


class UsageError(Exception):
    """A command line the parser refuses, as the one line ``main`` prints (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a refused command line is one line naming the subcommand and its --help
    (argparse would print the usage block and exit the interpreter)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="genlab",
        description="Train, sample and evaluate deep generative models.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    s.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--out",
        default="samples.npy",
        help="output .npy (or .png for a plot; .txt for text models: the decoded samples; "
        "default samples.npy)",
    )
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--label", type=int, help="class-conditional models: the class to sample")
    s.add_argument("--classifier", help="diffusion: a noise-classifier run for classifier guidance")
    s.add_argument("--classifier-scale", type=float, default=1.0, help="classifier guidance scale")
    s.add_argument(
        "--prompt",
        help="text models: the text to continue; caption-conditioned image models "
        '(model.conditioning=caption): the caption to draw, e.g. "a bold seven" (the option '
        "'prompt')",
    )
    s.add_argument(
        "--infill",
        help="text diffusion models: a template whose every '_' is one character to fill, the "
        "other characters kept as given, e.g. \"ROMEO: ____ my love ____.\" (the option 'infill')",
    )
    _add_sampling_flags(s)

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

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run: the metrics of its data's kind, each with its real-data "
        "floor, and the held-out likelihood",
    )
    e.add_argument("run", help="a run directory")
    e.add_argument(
        "--data",
        help="held-out data to compare with: .npy/.npz/.csv points, an image folder or IDX folder, "
        "a .txt (default: fresh draws of the true law, or the run's test split)",
    )
    e.add_argument(
        "--split",
        choices=("test", "val"),
        help="the run's held-out split to report on (default: test, which neither training nor "
        "checkpoint selection saw; val chose the checkpoint, so it is for diagnosis only)",
    )
    e.add_argument("--n", type=int, help="samples per seed")
    e.add_argument("--seeds", type=int, help="number of sampling seeds")
    e.add_argument(
        "--metrics", help="comma-separated metric names (default: all for the data kind)"
    )
    e.add_argument("--no-floor", action="store_true", help="skip the real-data floors")
    e.add_argument("--no-nll", action="store_true", help="skip the held-out likelihood")
    e.add_argument(
        "--nll-n",
        type=int,
        help="held-out examples (text: characters) for the likelihood; with --n, this bounds "
        "the cost of an evaluation (a text diffusion model's bound is its slowest part)",
    )
    e.add_argument("--features", help="images: a feature-network folder (default: genlab's cache)")
    e.add_argument(
        "--scorer",
        help="text: an autoregressive genlab run on the same text (e.g. gpt) that scores --n "
        "samples: their generative perplexity, beside their unigram entropy (eval.scorer)",
    )
    e.add_argument(
        "--inception",
        help="images: also torchmetrics' FID with this local Inception weights file (a pickle: it "
        "can run code, so only name a file you trust; needs torchmetrics and torch-fidelity)",
    )
    e.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument(
        "--write",
        action="store_true",
        help="also write metrics.json and samples.png into the run directory, as the end of "
        "genlab train does (for a run trained with --no-eval, or to re-evaluate it)",
    )
    _add_sampling_flags(e)

    sc = sub.add_parser(
        "score",
        help="score samples from anywhere (an array, an image folder, a .txt) against a data set: "
        "the metrics of genlab eval, each with its real-data floor",
        description="Scores SAMPLES against the held-out split of --data (the test split by "
        "default; fresh draws for a known law) with every metric of its kind beside its "
        "real-data floor, as genlab eval does for a run's own samples. Images are compared on "
        "genlab's feature network for the data (trained on its training split, cached). "
        "There is no likelihood: the samples come without a model.",
    )
    sc.add_argument(
        "samples",
        help="points: a float (N, d) .npy/.npz/.csv; images: uint8 (0..255) or float [-1, 1] "
        "(N, C, H, W) / (N, H, W, C) .npy/.npz (an .npz may hold 'labels'), an image folder or "
        "IDX file; text: a .txt as genlab sample writes it",
    )
    sc.add_argument(
        "overrides",
        nargs="*",
        help="data.key=value: the split of --data, e.g. data.test_fraction=0.3",
    )
    sc.add_argument(
        "--data",
        required=True,
        help="a run directory (its data, split as it was trained: the figures equal genlab eval's "
        "on the same samples), a data set name (digits, moons, ...), or a file / folder",
    )
    sc.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="the held-out split to compare with (default: test)",
    )
    sc.add_argument("--n", type=int, help="samples per seed (default: all of them over --seeds)")
    sc.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="score --n samples per seed against each seed's reference set (default 1)",
    )
    sc.add_argument(
        "--metrics", help="comma-separated metric names (default: all for the data kind)"
    )
    sc.add_argument("--no-floor", action="store_true", help="skip the real-data floors")
    sc.add_argument("--features", help="images: a feature-network folder (default: genlab's cache)")
    sc.add_argument(
        "--scorer",
        help="text: an autoregressive genlab run on the same text (e.g. gpt): the samples' "
        "generative perplexity, beside their unigram entropy",
    )
    sc.add_argument("--json", action="store_true", help="print the report as JSON")

    f = sub.add_parser(
        "features",
        help="train (or show) the feature network that image metrics use for a data set",
    )
    f.add_argument("data", help="a data set name (digits, mnist) or an image folder / IDX folder")
    f.add_argument("--json", action="store_true", help="print the network's record as JSON")

    c = sub.add_parser(
        "encode",
        help="encode data with a trained autoencoder run (VQ-VAE/VQGAN codes, VAE/KL latents)",
        description="Writes an .npz holding codes_train, codes_val and codes_test (the run's own "
        "data, split as it was trained; codes_train only for --data), and labels_* where the "
        "data has labels: integer codes (N, h, w) for a VQ-VAE or VQGAN, latents for a VAE or "
        "KL autoencoder.",
    )
    c.add_argument("run", help="an autoencoder run directory (vqvae, vqgan, vae, kl-autoencoder)")
    c.add_argument(
        "--data",
        help="a data set name or a file/folder (default: the run's own data, all three splits)",
    )
    c.add_argument("--out", required=True, help="an .npz file: codes (or latents) and labels")
    c.add_argument("--batch", type=int, default=256, help="examples per batch (default 256)")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")

    rp = sub.add_parser(
        "report", help="one HTML page (and a markdown twin) for runs of any families"
    )
    rp.add_argument("runs", nargs="+", help="run directories (unfinished or broken ones get a row)")
    rp.add_argument("--out", required=True, help="a folder: index.html, report.md and img/")
    rp.add_argument(
        "--no-text", action="store_true", help="text models: do not sample text for the page"
    )
    rp.add_argument(
        "--no-nfe", action="store_true",
        help="skip quality against NFE (W2 or FD at 2-32 steps of each fixed-step sampler)",
    )  # fmt: skip

    lb = sub.add_parser(
        "leaderboard",
        help="train every family that fits the data on an equal CPU budget, rank, report",
    )
    lb.add_argument("--data", required=True, help="a data set name or a file/folder of your own")
    lb.add_argument("--budget-minutes", type=float, required=True, help="the whole CPU budget")
    lb.add_argument("--out", required=True, help="a folder (run it again to resume)")
    lb.add_argument("--families", help="comma-separated families (default: every one that fits)")

    sub.add_parser(
        "list",
        help="list the datasets, models, samplers and metrics that exist",
        description="Prints every registry, one entry per line with its help: datasets, models "
        "(families), samplers, text samplers, noise processes, metrics and backbones.",
    )
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
    if args.label is not None and args.prompt is not None:
        raise GenlabError("give --label or --prompt, not both (the prompt is the condition)")
    path = Path(args.out)
    if path.suffix not in (".npy", ".png", ".txt"):
        raise GenlabError(f"--out must end in .npy, .png or .txt, got {path.name}")
    _check_out(path, args.force)
    run = genlab.load_run(args.run, ema=not args.raw)
    options = _sampling_options(args, run.model)
    if args.classifier:
        options["classifier"] = genlab.load_run(args.classifier).model  # checked by the model
        options["classifier_scale"] = args.classifier_scale
    elif args.classifier_scale != 1.0:
        raise GenlabError("--classifier-scale scales the guidance of --classifier RUN; give both")
    vocab = run.model.spec.vocab
    if path.suffix == ".txt" and vocab is None:
        raise GenlabError(f"--out {path.name}: .txt is for text models; this run makes "
                          f"{run.model.family} samples (use .npy or .png)")  # fmt: skip
    if path.suffix == ".png" and vocab is not None:
        raise GenlabError(f"--out {path.name}: this run makes text; use .txt (or .npy for ids)")
    from genlab.progress import reporting

    g = torch.Generator().manual_seed(args.seed)
    with reporting("sample"):  # a long draw says how far it is, every 10 s
        out = run.model.sample(args.n, labels=args.label, generator=g, **options)
    x = out.x.cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".txt":  # one sample after another, a separator line between them
        from genlab.data.text import SAMPLE_SEPARATOR, decode

        texts = [decode(row, vocab) for row in out.x.cpu()]
        path.write_text(SAMPLE_SEPARATOR.join(texts) + "\n", encoding="utf-8")
    elif path.suffix == ".png":
        from genlab.eval.plots import plot_image_grid, plot_samples

        if out.x.dim() == 4:
            plot_image_grid(out.x.clamp(-1, 1), path=path)
        else:
            plot_samples(out.x, path=path, title=f"{args.n} samples, NFE {out.nfe}")
    else:
        np.save(path, x)
    what = "sample" if args.n == 1 else "samples"
    print(f"wrote {args.n} {what} {tuple(x.shape[1:])} to {path} (NFE {out.nfe})")
    return 0


def _check_out(path: Path, force: bool) -> None:
    """An output file given with --out: refused when it exists (unless --force) or is a folder,
    before any work, so no file is replaced by accident."""
    from genlab.errors import GenlabError

    if path.is_dir():
        raise GenlabError(f"--out {str(path)!r} is a folder; give a file name")
    if path.exists() and not force:
        raise GenlabError(
            f"--out {str(path)!r} exists; give another name, or --force to replace it"
        )


def _sampling_options(args: argparse.Namespace, model) -> dict:
    """The sampling options of the command line (flags and --option KEY=VALUE), read with the
    types the model's family declares; an option it does not take is an error naming those it
    does."""
    from genlab.errors import GenlabError

    named = {k: getattr(args, k, None) for k in ("sampler", "steps", "schedule", "guidance")}
    options = {k: v for k, v in named.items() if v is not None}
    for flag, what in (
        ("prompt", "text models, e.g. gpt, and caption-conditioned diffusion"),
        ("infill", "text diffusion, e.g. mdlm"),
    ):
        text = getattr(args, flag, None)
        if text is None:
            continue
        if flag not in model.options():
            raise GenlabError(f"--{flag}: {model.family} models take no {flag} (it is for {what})")
        options[flag] = text
    raw: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GenlabError(f"--option takes KEY=VALUE, got {item!r}")
        raw[key.strip()] = value.strip()
    if "sampler" in raw:  # the sampler decides which other options exist
        options["sampler"] = raw.pop("sampler")
    allowed = model.options(options)
    for key, text in raw.items():
        opt = allowed.get(key)
        if opt is None:
            raise GenlabError(model.unknown_option_message(key, allowed))
        if opt.parse is None:
            raise GenlabError(f"--option {key}: this option can only be given from Python")
        options[key] = text  # read by the option's own type in resolve_options
    model.resolve_options(options)  # checks the values and the flags (--sampler for a flow, ...)
    return options


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
    from genlab.eval.table import format_report

    for k in ("n", "seeds", "steps", "nll_n"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise genlab.GenlabError(
                f"--{k.replace('_', '-')} must be at least 1, got {getattr(args, k)}"
            )
    if args.split and args.data:
        raise genlab.GenlabError(
            "--split picks one of the run's own held-out splits and --data gives other held-out "
            "data: give one of them"
        )
    run = genlab.load_run(args.run, ema=not args.raw)
    changes = {
        k: getattr(args, k)
        for k in ("n", "seeds", "features", "scorer", "split", "nll_n")
        if getattr(args, k)
    }
    if args.metrics:
        changes["metrics"] = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.no_floor:
        changes["floor"] = False
    if args.no_nll:
        changes["nll"] = False
    likelihood = {o.name for o in run.model.likelihood_options}  # --option iwae_k=5000
    nll_options = dict(run.config.eval.nll_options)
    rest = []
    for item in args.option:
        key, _, value = item.partition("=")
        if key.strip() in likelihood and value:
            nll_options[key.strip()] = value
        else:
            rest.append(item)
    args.option = rest
    options = {**run.config.eval.options, **_sampling_options(args, run.model)}
    cfg = dataclasses.replace(run.config.eval, options=options, nll_options=nll_options, **changes)
    if args.write and args.data:
        raise genlab.GenlabError(
            "--write records the run's own evaluation in it; with --data the figures are of other "
            "data: print them (--json) instead"
        )
    report = genlab.evaluate_run(
        run, held_out=args.data, cfg=cfg, inception=args.inception, write=args.write,
        progress=True,
    )  # fmt: skip
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import genlab
    from genlab.eval.table import format_report

    metrics = None
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    report = genlab.score(
        args.samples, args.data, overrides=list(args.overrides), n=args.n, seeds=args.seeds,
        split=args.split, metrics=metrics, floor=not args.no_floor, features=args.features,
        scorer=args.scorer, progress=True,
    )  # fmt: skip
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import dataclasses

    import genlab

    info = genlab.features(args.data)
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=1, default=str))
    else:
        from genlab.feature_networks import describe

        print(describe(info))
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


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import genlab
    from genlab.api import load_reference
    from genlab.data import load
    from genlab.errors import DataError, GenlabError
    from genlab.registry import DATASETS

    if args.batch < 1:
        raise GenlabError(f"--batch must be at least 1, got {args.batch}")
    path = Path(args.out)
    if path.suffix != ".npz":
        raise GenlabError(f"--out must name an .npz file, got {args.out!r}")
    _check_out(path, args.force)
    run = genlab.load_run(args.run)
    model = run.model.eval()
    if model.latent() is None:
        raise GenlabError(
            f"{args.run} is a {model.family} run, which has no latent to encode to; give an "
            "autoencoder run (vqvae, vqgan, vae, kl-autoencoder)"
        )
    if args.data is None:
        ds = run.dataset
    elif args.data in DATASETS.names():
        ds = load(name=args.data)
    else:
        ds = load_reference(args.data, run.dataset)
    if tuple(ds.shape) != tuple(model.spec.shape):
        raise DataError(
            f"{args.data or ds.name!r} holds examples of shape {tuple(ds.shape)}; the run was "
            f"trained on {tuple(model.spec.shape)}"
        )
    out = {}
    with torch.no_grad():
        for split in ("train", "val", "test"):
            x, y = ds.part(split)
            if len(x) == 0:
                continue
            parts = [model.encode(c.to(model.device)).cpu() for c in torch.split(x, args.batch)]
            codes = torch.cat(parts)
            out[f"codes_{split}"] = codes.numpy()
            if y is not None:
                out[f"labels_{split}"] = y.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    what = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in out.items())
    print(f"wrote {path}: {what}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from genlab.report import check_report_folder, read_run, write_report

    out = Path(args.out)
    check_report_folder(out)  # before the runs are read (sampling for --nfe can take minutes)
    rows = [read_run(r, sample_text=not args.no_text, nfe=not args.no_nfe) for r in args.runs]
    page = write_report(rows, out)
    for row in rows:
        note = "" if row.status == "ok" else f" [{row.status}: {'; '.join(row.problems)}]"
        print(f"  {row.name}: {row.family} on {row.data}{note}")
    print(f"wrote {page} and {out / 'report.md'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from genlab.leaderboard import run

    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    page = run(args.data, args.budget_minutes, args.out, families=families)
    print(f"wrote {Path(args.out) / 'leaderboard.md'} and {page}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "list": cmd_list,
    "reflow": cmd_reflow,
    "features": cmd_features,
    "encode": cmd_encode,
    "report": cmd_report,
    "leaderboard": cmd_leaderboard,
    "score": cmd_score,
}


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the line with ``key=value`` overrides accepted anywhere on it (before, between or after
    the flags) for the commands that take them; anything else unrecognised is an error with the
    subcommand's own usage."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices.get(args.command, parser)
    takes = hasattr(args, "overrides")
    bad = [x for x in extra if not (takes and _is_override(x))]
    if bad:
        sub.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = [*args.overrides, *extra]
    return args


def _warn_in_one_line(showwarning):
    """genlab's own warnings (a corrupt checkpoint skipped, say) as one line naming the command,
    not Python's ``file:line: UserWarning`` form; other libraries' warnings keep theirs."""
    package = str(Path(__file__).resolve().parent)

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(package):
            print(f"genlab: warning: {message}", file=sys.stderr)
        else:
            showwarning(message, category, filename, lineno, file, line)

    show.genlab = True  # type: ignore[attr-defined]
    return show


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    try:
        args = parse(parser, argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    if not getattr(warnings.showwarning, "genlab", False):
        warnings.showwarning = _warn_in_one_line(warnings.showwarning)
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
