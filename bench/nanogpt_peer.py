"""nanoGPT itself on its README CPU recipe ("I only have a macbook"), on this machine, over seeds:
what the reference that genlab's bar "nanoGPT CPU recipe <= 1.88 nats/char" quotes scores here.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/nanogpt_peer.py --nanogpt PATH [--seeds 0 1 2]
          [--text /work/shared/data/tinyshakespeare/input.txt] [--nanogpt-commit SHA] [--quick]

PATH is a checkout of https://github.com/karpathy/nanoGPT (nothing of it is copied into this
repository). Its data must be in PATH/data/shakespeare_char (train.bin, val.bin, meta.pkl); with
``--text FILE`` and no data there, the script copies FILE to PATH/data/shakespeare_char/input.txt
and runs nanoGPT's own ``prepare.py`` on it (with a stub ``requests`` module: prepare.py imports
it only to download input.txt when that file is missing): vocabulary = sorted characters of the
whole text, the first 90% -> train.bin, the last 10% -> val.bin (111,540 characters), uint16.

For each seed s, nanoGPT's unmodified ``train.py`` runs in a subprocess (cwd PATH, one torch
thread) with the README's command line

    config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
    --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
    --lr_decay_iters=2000 --dropout=0.0

plus ``--out_dir=<temp dir> --always_save_checkpoint=True`` (the config sets False, which saves
only when the estimate improves; True changes nothing in training and makes the checkpoint the
one evaluated at iter 2000). **The seed:** train.py has no seed setting; it calls
``torch.manual_seed(1337 + seed_offset)`` with ``seed_offset`` the DDP rank (0 here), and every
random draw (initialisation, batches, evaluation batches) comes from that global torch generator.
The subprocess is ``python -c WRAPPER``: WRAPPER reads train.py, replaces that one statement by
``torch.manual_seed(1337 + seed_offset + s)`` (asserted to occur exactly once), sets
``torch.set_num_threads(1)`` and executes the result as ``__main__``; nothing else changes. Seed
0 is nanoGPT exactly as published (torch seed 1337).

Recorded per seed:
  (i)   ``val loss`` as nanoGPT prints it at ``step 2000`` (mean of eval_iters=20 random batches
        of 12 x 64 from val.bin), parsed from its stdout; also its ``train loss``.
  (ii)  the same estimator (nanoGPT's ``estimate_loss`` on val: random offsets
        ``randint(len(val) - 64)``, batch 12, ``model(X, Y)``'s loss) with eval_iters=200, on the
        checkpoint, drawn from a ``torch.Generator`` seeded with s.
  (iii) exact: val.bin cut into consecutive 64-character windows ``x = val[64k : 64k+64]``,
        ``k < (len(val) - 1) // 64`` (1,742 windows), targets ``val[64k+1 : 64k+65]``; every
        one of the 64 target positions scored (1 to 64 characters of context): each character of
        val.bin from the second to the 111,489th once. Mean nats/char, float64 log-softmax.
  (iv)  the same forward pass, target positions 0..62 only: the characters at positions 1..63 of
        the windows ``val[64k : 64k+64]``, each from the 1..63 characters before it in its window
        (the definition of genlab's ``nats_per_char_positions_1_on`` in bench/autoregressive.py;
        genlab's test split starts one character later than nanoGPT's val.bin: round vs int).
        nanoGPT has no start token, so genlab's every-position figure (position 0 from the start
        token alone) has no nanoGPT counterpart; (iii) scores position 0 of a window from the 64
        characters before it instead.
  (v)   training wall seconds (the subprocess, start to exit, including its nine 20-batch
        evaluations), and the median of the per-iteration times train.py prints.
The checkpoint is nanoGPT's last save, at iter 2000: the weights after 2,000 updates, those (i)
was measured on (train.py then makes one more update, iter 2000, and exits without saving it).
Mean and sample standard deviation over seeds of each.

Prints a table and writes ``bench/results/nanogpt_peer.json``. ``--quick``: 50 iterations
(warmup 5, evaluation every 25), eval_iters=10 for (ii), seed 0 unless ``--seeds``; a smoke test
that measures nothing, written to $TMPDIR.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "nanogpt_peer.json"
README_LOSS = 1.88
RECIPE = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
    "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0",
]  # fmt: skip
SEED_LINE = "torch.manual_seed(1337 + seed_offset)"
WRAPPER = f"""
import os, sys, torch
seed = int(os.environ["NANOGPT_PEER_SEED"])
torch.set_num_threads(1)
src = open("train.py").read()
assert src.count({SEED_LINE!r}) == 1, "train.py's seed statement changed"
src = src.replace({SEED_LINE!r}, "torch.manual_seed(1337 + seed_offset + %d)" % seed)
print("[nanogpt_peer] torch.manual_seed(1337 + seed_offset + %d), 1 torch thread" % seed)
sys.argv = ["train.py", *sys.argv[1:]]
exec(compile(src, "train.py", "exec"), {{"__name__": "__main__", "__file__": "train.py"}})
"""
EVAL_RE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)$", re.M)
ITER_RE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms", re.M)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(nanogpt: Path, text: Path | None) -> Path:
    """PATH/data/shakespeare_char, prepared by nanoGPT's prepare.py from ``text`` if missing."""
    data = nanogpt / "data" / "shakespeare_char"
    files = [data / f for f in ("train.bin", "val.bin", "meta.pkl")]
    if all(f.exists() for f in files):
        return data
    if text is None:
        sys.exit(f"no prepared data in {data}: pass --text FILE (Tiny Shakespeare's input.txt)")
    shutil.copyfile(text, data / "input.txt")
    stub = "import sys, types; sys.modules['requests'] = types.ModuleType('requests'); "
    run = "exec(compile(open('prepare.py').read(), 'prepare.py', 'exec'), {'__name__': '__main__', '__file__': 'prepare.py'})"  # noqa: E501
    subprocess.run([sys.executable, "-c", stub + run], cwd=data, check=True)
    return data


def load_model_py(nanogpt: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train(nanogpt: Path, seed: int, out_dir: Path, extra: list[str]) -> dict:
    env = {**os.environ, "NANOGPT_PEER_SEED": str(seed), "OMP_NUM_THREADS": "1"}
    args = [*RECIPE, *extra, f"--out_dir={out_dir}", "--always_save_checkpoint=True"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=nanogpt, env=env,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    (out_dir / "stdout.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"nanoGPT train.py failed (seed {seed}):\n{proc.stdout[-3000:]}{proc.stderr}")
    evals = [(int(a), float(b), float(c)) for a, b, c in EVAL_RE.findall(proc.stdout)]
    iter_ms = [float(t) for _, _, t in ITER_RE.findall(proc.stdout)]
    return {"args": args, "train_seconds": seconds, "evals": evals,
            "iter_ms_median": statistics.median(iter_ms[5:] or iter_ms),
            "iterations_logged": len(iter_ms)}  # fmt: skip


@torch.no_grad()
def score(model_py, ckpt_path: Path, val: np.ndarray, seed: int, eval_iters: int) -> dict:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # tensors and plain values
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model = model_py.GPT(model_py.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(state)
    model.eval()
    T, data = ckpt["model_args"]["block_size"], torch.from_numpy(val.astype(np.int64))
    # (ii) nanoGPT's estimate_loss on val, eval_iters batches
    g = torch.Generator().manual_seed(seed)
    bs = ckpt["config"]["batch_size"]
    losses = []
    for _ in range(eval_iters):
        ix = torch.randint(len(data) - T, (bs,), generator=g)
        X = torch.stack([data[i : i + T] for i in ix])
        Y = torch.stack([data[i + 1 : i + 1 + T] for i in ix])
        losses.append(model(X, Y)[1].item())
    # (iii), (iv) consecutive windows, exact
    K = (len(data) - 1) // T
    X = data[: K * T].reshape(K, T)
    Y = data[1 : K * T + 1].reshape(K, T)
    nll = []
    for i in range(0, K, 256):
        logits = model(X[i : i + 256], Y[i : i + 256])[0].double()
        nll.append(-logits.log_softmax(-1).gather(-1, Y[i : i + 256, :, None])[..., 0])
    nll = torch.cat(nll)
    return {
        "iter_num": ckpt["iter_num"], "eval_iters": eval_iters, "estimate_val": float(np.mean(losses)),
        "exact_all": float(nll.mean()), "exact_positions_1_63": float(nll[:, :-1].mean()),
        "exact_windows": K, "exact_characters": int(nll.numel()),
        "exact_characters_1_63": int(nll[:, :-1].numel()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip


FIELDS = [  # key, header
    ("val_printed", "(i) printed", ".4f"), ("estimate_val", "(ii) 200 b.", ".4f"),
    ("exact_all", "(iii) exact", ".4f"), ("exact_positions_1_63", "(iv) 1..63", ".4f"),
    ("train_seconds", "(v) train s", ".1f"),
]  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    ap.add_argument("--text", type=Path, help="input.txt to prepare the data from, if missing")
    ap.add_argument("--nanogpt-commit", help="recorded when PATH is not a git work tree")
    ap.add_argument("--quick", action="store_true", help="smoke test: 50 iterations")
    ap.add_argument("--out", type=Path, help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    nanogpt = args.nanogpt.resolve()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out, extra, eval_iters = args.out or RESULTS, [], 200
    if args.quick:
        extra = ["--max_iters=50", "--lr_decay_iters=50", "--warmup_iters=5", "--eval_interval=25"]
        eval_iters = 10
        out = args.out or Path(tempfile.gettempdir()) / "nanogpt_peer-quick.json"
    data = prepare(nanogpt, args.text)
    val = np.fromfile(data / "val.bin", dtype=np.uint16)
    try:
        commit = subprocess.run(["git", "-C", str(nanogpt), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except Exception:
        commit = args.nanogpt_commit
    t_start = time.perf_counter()
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "quick": args.quick, "readme_loss": README_LOSS,
        "nanogpt": {"path": str(nanogpt), "commit": commit,
                    "train_py_sha256": sha256(nanogpt / "train.py"),
                    "model_py_sha256": sha256(nanogpt / "model.py"),
                    "train_bin_sha256": sha256(data / "train.bin"),
                    "val_bin_sha256": sha256(data / "val.bin"), "val_characters": len(val)},
        "command": ["train.py", *RECIPE, *extra], "seed_mechanism": (
            f"train.py's `{SEED_LINE}` replaced by `torch.manual_seed(1337 + seed_offset + s)`"),
        "runs": [],
    }  # fmt: skip
    model_py = load_model_py(nanogpt)
    for s in seeds:
        with tempfile.TemporaryDirectory(prefix="nanogpt-peer-") as tmp:
            r = train(nanogpt, s, Path(tmp), extra)
            last = r["evals"][-1]
            sc = score(model_py, Path(tmp) / "ckpt.pt", val, s, eval_iters)
        assert last[0] == sc["iter_num"], (last, sc["iter_num"])
        row = {"seed": s, "torch_seed": 1337 + s, "iter": last[0], "train_printed": last[1],
               "val_printed": last[2], **sc, **r}  # fmt: skip
        record["runs"].append(row)
        print(f"seed {s}: iter {last[0]} val {last[2]:.4f} (printed), {sc['estimate_val']:.4f} "
              f"({eval_iters} batches), exact {sc['exact_all']:.4f}, positions 1..63 "
              f"{sc['exact_positions_1_63']:.4f}; {r['train_seconds']:.0f} s "
              f"({r['iter_ms_median']:.1f} ms/iter)", flush=True)  # fmt: skip
    summary = {}
    for key, _, _ in FIELDS:
        v = [row[key] for row in record["runs"]]
        summary[key] = {"mean": statistics.mean(v),
                        "std": statistics.stdev(v) if len(v) > 1 else None}  # fmt: skip
    record["summary"] = summary
    print(f"\nnanoGPT {(commit or '?')[:12]} CPU recipe, nats/char on val.bin "
          f"({len(val):,} characters); README: {README_LOSS}")  # fmt: skip
    print(f"  {'seed':>6} " + " ".join(f"{h:>12}" for _, h, _ in FIELDS))
    for row in record["runs"]:
        print(f"  {row['seed']:>6} " + " ".join(f"{row[k]:>12{f}}" for k, _, f in FIELDS))
    print(f"  {'mean':>6} " + " ".join(f"{summary[k]['mean']:>12{f}}" for k, _, f in FIELDS))
    if len(seeds) > 1:
        print(f"  {'std':>6} " + " ".join(f"{summary[k]['std']:>12{f}}" for k, _, f in FIELDS))
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
