"""A tiny training recipe for every registered family, for the tests that every family must pass
(exact resume after SIGKILL in ``test_faults.py``, one process against two in
``test_distributed.py``). ``test_every_family_has_a_tiny_recipe`` fails the moment a family is
registered without one, so a new family joins those tests when it is added. A second stage's
recipe names the tiny recipe of its stage 1, and a warm restart the recipe of the run it starts
from (``trainer.init_from``); either run is trained once per test session. :data:`VARIANTS` adds
recipes that are not a family's default but take paths of their own (SEDD's absorbing transition,
a warm restart with an EMA); :data:`RECIPES` is what the tests run: both."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.val_every=0",
          "trainer.early_stopping=0"]  # fmt: skip
POINTS = ["data.n=2000", "trainer.batch_size=64"]
SMALL_FLOW = [*POINTS, "model.hidden=16", "model.layers=2"]
DIGITS = ["trainer.batch_size=64", "model.hidden=16"]
# VQGAN and the KL autoencoder: the discriminator from step 4, so the 12-step runs of the
# 1-vs-2-process test train both players; no perceptual term (its network trains on the data)
STAGE1 = ["trainer.batch_size=32", "model.channels=8", "model.disc_channels=8",
          "model.disc_start=4", "model.perceptual=0"]  # fmt: skip


@dataclass(frozen=True)
class Tiny:
    config: str  # a file in configs/
    overrides: list[str]
    steps: int  # long enough that a SIGKILL lands mid-run, short enough for the suite
    ddp_atol: float = 1e-5  # one process against two: weights agree to this
    why: str = ""  # the reason for a looser ddp_atol or for ddp_overrides
    ddp_overrides: tuple[str, ...] = ()  # for the 1-vs-2-process test only
    stage1: Tiny | None = None  # a second stage: the recipe of the stage-1 run it needs
    init_from: Tiny | None = None  # a warm restart: the recipe of the run whose weights start it

    @property
    def path(self) -> str:
        return str(ROOT / "configs" / self.config)

    def args(self, *extra: str) -> list[str]:
        """The command-line overrides; a second stage's name its stage-1 run, a warm restart's the
        run it starts from (each trained on first use, see :func:`stage1_run`)."""
        stage1 = [f"model.autoencoder={stage1_run(self.stage1)}"] if self.stage1 else []
        start = [f"trainer.init_from={stage1_run(self.init_from)}"] if self.init_from else []
        return [*COMMON, *self.overrides, *stage1, *start, *extra]


_FOLDER: list[Path] = []


def _own_folder() -> Path:
    """A temporary folder of this process, outside pytest (never reused: no stale runs)."""
    if not _FOLDER:
        _FOLDER.append(Path(tempfile.mkdtemp(prefix="genlab-tiny-")))
    return _FOLDER[0]


def stage1_run(tiny: Tiny) -> Path:
    """The run directory of a tiny recipe another one needs (a stage 1, or the start of a warm
    restart), trained once (``genlab train --no-eval``) into a
    folder shared by the test workers (``GENLAB_TINY_RUNS``, set by conftest.py) under a file lock,
    and reused by every second stage that names it."""
    root = Path(os.environ.get("GENLAB_TINY_RUNS") or _own_folder())
    root.mkdir(parents=True, exist_ok=True)
    key = json.dumps([tiny.config, tiny.overrides, tiny.steps])
    out = root / f"stage1-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    with open(root / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.yaml").is_file():
            tmp = Path(tempfile.mkdtemp(dir=root))
            cmd = [sys.executable, "-m", "genlab", "train", tiny.path,
                   *tiny.args(f"trainer.steps={tiny.steps}"), "--out", str(tmp / "run"),
                   "--no-eval"]  # fmt: skip
            env = dict(os.environ, OMP_NUM_THREADS="1")
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            (tmp / "run").rename(out)
    return out


# families that do not train a generative model of the data: not part of these tests
EXEMPT = {"noise-classifier": "a classifier p(y | x_t) for guidance, trained on a diffusion run"}

TINY: dict[str, Tiny] = {
    "flow-matching": Tiny(
        "flow-matching-moons.yaml", [*POINTS, "model.hidden=32", "model.depth=2"], 1000
    ),  # fmt: skip
    "diffusion": Tiny("ddpm-moons.yaml", [*POINTS, "model.hidden=32", "model.depth=2"], 600),
    "gan": Tiny("gan-8gaussians.yaml", [*POINTS, "model.hidden=32", "model.depth=2"], 600),
    "nice": Tiny("nice-moons.yaml", SMALL_FLOW, 400),
    "realnvp": Tiny("realnvp-moons.yaml", SMALL_FLOW, 400),
    "glow": Tiny("glow-moons.yaml", SMALL_FLOW, 400),
    "nsf": Tiny("nsf-moons.yaml", SMALL_FLOW, 400),
    "maf": Tiny("maf-moons.yaml", SMALL_FLOW, 400),
    "iaf": Tiny("iaf-moons.yaml", SMALL_FLOW, 400),
    "ffjord": Tiny(
        "ffjord-moons.yaml",
        [*POINTS, "model.hidden=16", "model.depth=2", "model.rtol=1e-3", "model.atol=1e-3"],
        40,  # fmt: skip
    ),
    "fvsbn": Tiny("fvsbn-digits.yaml", ["trainer.batch_size=64"], 400),
    "nade": Tiny("nade-digits.yaml", DIGITS, 400),
    "made": Tiny("made-digits.yaml", [*DIGITS, "model.masks=4", "model.ensemble=2"], 400),
    "pixelcnn": Tiny(
        "pixelcnn-digits.yaml",
        [
            "trainer.batch_size=32",
            "model.channels=8",
            "model.layers=2",
            "model.head=8",
            "model.first_kernel=3",
            "model.components=2",
        ],
        120,
    ),  # fmt: skip
    "vae": Tiny(
        "vae-moons.yaml", [*POINTS, "model.hidden=16", "model.depth=1", "model.iwae_k=10"], 400
    ),
    "vqvae": Tiny(
        "vqvae-digits.yaml",
        ["trainer.batch_size=32", "model.channels=8", "model.codes=16", "model.code_dim=4"],
        200,
    ),
    "vqgan": Tiny(
        "vqgan-digits.yaml",
        [*STAGE1, "model.codes=16", "model.code_dim=4"],
        200,
    ),
    "kl-autoencoder": Tiny("kl-autoencoder-digits.yaml", STAGE1, 200),
    "gpt": Tiny(
        "char-gpt-shakespeare.yaml",
        [
            "data.n=2000",
            "trainer.batch_size=64",
            "model.depth=2",
            "model.context=8",
            "model.hidden=16",
            "model.heads=2",
            "model.dropout=0.1",
        ],
        400,  # fmt: skip
        ddp_overrides=("model.dropout=0.0",),
        why="dropout masks come from each process's own generator (resume restores it exactly)",
    ),
    "vqgan-prior": Tiny(
        "vqgan-prior-mnist.yaml",
        [
            "data.name=digits",
            "data.val_fraction=0.1",  # the split of the digits stage-1 recipes
            "data.test_fraction=0.3",
            "trainer.batch_size=32",
            "model.hidden=16",
            "model.depth=1",
            "model.heads=2",
        ],  # fmt: skip
        300,
        stage1=Tiny(
            "vqvae-digits.yaml",
            ["trainer.batch_size=32", "model.channels=8", "model.codes=16", "model.code_dim=4"],
            50,
        ),
    ),
    "ldm": Tiny(  # text-conditioned (captions from the labels) on a KL autoencoder's latent maps
        "ldm-caption-mnist.yaml",
        [
            "data.name=digits",
            "data.val_fraction=0.1",  # the split of the digits stage-1 recipes
            "data.test_fraction=0.3",
            "trainer.batch_size=32",
            "model.channels=8",
            "model.channel_mults=[1]",
            "model.attention=false",
            "model.time_dim=16",
            "model.text_hidden=16",
            "model.text_depth=1",
        ],  # fmt: skip
        200,
        stage1=Tiny("kl-autoencoder-digits.yaml", [*STAGE1, "model.disc_start=1000"], 50),
    ),
    "mdlm": Tiny(
        "mdlm-shakespeare.yaml",
        [
            "data.n=2000",
            "trainer.batch_size=64",
            "model.depth=2",
            "model.context=8",
            "model.hidden=16",
            "model.heads=2",
        ],  # fmt: skip
        400,
    ),
    "bd3lm": Tiny(
        "bd3lm-shakespeare.yaml",
        [
            "data.n=2000",
            "trainer.batch_size=64",
            "model.depth=2",
            "model.context=8",
            "model.hidden=16",
            "model.heads=2",
            "model.block_size=2",
        ],  # fmt: skip
        400,
    ),
    "sedd": Tiny(
        "sedd-shakespeare.yaml",
        [
            "data.n=2000",
            "trainer.batch_size=64",
            "model.depth=2",
            "model.context=8",
            "model.hidden=16",
            "model.heads=2",
            "model.transition=uniform",
        ],  # fmt: skip
        400,
    ),
}

SEDD_ABSORB = [o for o in TINY["sedd"].overrides if o != "model.transition=uniform"]

#: recipes beside each family's own, for code paths of their own: each joins the SIGKILL-resume
#: and the one-against-two-process tests with the same bars (bit-identical; ddp_atol)
VARIANTS: dict[str, Tiny] = {
    # the absorbing transition (the recipe's default; TINY["sedd"] takes the uniform one): MDLM's
    # masking machinery with the score entropy
    "sedd-absorbing": Tiny("sedd-shakespeare.yaml", SEDD_ABSORB, 400),
    # a warm restart as bench/text.py runs them: the weights of another run (trainer.init_from),
    # a new cosine from a lower peak, and an EMA (the recipe has none); resuming must not load the
    # start weights again, and the EMA must resume with the rest
    "sedd-absorbing-warm-restart": Tiny(
        "sedd-shakespeare.yaml",
        [*SEDD_ABSORB, "trainer.lr=0.0003", "trainer.ema_decay=0.999"],
        400,
        init_from=Tiny("sedd-shakespeare.yaml", SEDD_ABSORB, 100),
    ),
}
RECIPES: dict[str, Tiny] = {**TINY, **VARIANTS}


# -- running every family's tiny recipe in one process (tests/train_many.py) -----------------------

DRIVER = Path(__file__).resolve().with_name("train_many.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def launch(procs: int, *args: str) -> list[str]:
    """The command that starts ``python ARGS`` in ``procs`` processes of one process group:
    torch's launcher run by this interpreter (``python -m torch.distributed.run``, what the
    ``torchrun`` script runs), so it is there whenever torch is, with or without a ``torchrun`` on
    the PATH or beside the interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={procs}", *args]  # fmt: skip


def write_plan(folder: Path, runs: dict[str, tuple[Tiny, list[str]]]) -> Path:
    """A plan for tests/train_many.py: run ``name`` is ``tiny`` with ``extra`` overrides, trained
    into ``folder/name``; results in ``folder/results``."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = {
        "runs": [
            {
                "name": name,
                "config": tiny.path,
                "args": tiny.args(*extra),
                "out": str(folder / name),
            }  # fmt: skip
            for name, (tiny, extra) in runs.items()
        ],
        "results": str(folder / "results"),
    }
    path = folder / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def driver_command(plan: Path, procs: int = 1) -> list[str]:
    if procs == 1:
        return [sys.executable, str(DRIVER), str(plan)]
    return launch(procs, str(DRIVER), str(plan))


def result(folder: Path, name: str, rank: int = 0) -> dict:
    """What the driver wrote for run ``name`` on ``rank`` (its return code and stderr)."""
    path = folder / "results" / f"{name}.rank{rank}.json"
    assert path.is_file(), f"{name}: the driver never finished this run (see the driver's log)"
    return json.loads(path.read_text())
