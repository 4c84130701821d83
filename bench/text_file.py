"""A text larger than memory would allow as int64 tokens: a 1 GB UTF-8 file, trained from a token
file mapped into memory.

Generates the text once (Tiny Shakespeare's lines in a new seeded order for every copy, with a
line of non-ASCII text (accents, Cyrillic, CJK, emoji) every 50 lines, until it holds the asked
number of bytes), then for each tokenizer, with an empty token cache, runs
`genlab train configs/char-gpt-shakespeare.yaml data.path=FILE data.options.tokenizer=T
trainer.steps=50 --no-eval` twice as a subprocess, one after the other, alone on the machine: the
first start checks and tokenizes the text into the cache, the second maps it. For each start it
records the wall time until the trainer's first progress line (`step 1/50`, with
trainer.log_every=1), the total wall time and the peak resident memory of the process (os.wait4's
ru_maxrss). The int64 tokens of the same text, what genlab held before token files, are printed
beside them.

Run:  PYTHONPATH=src .venv/bin/python bench/text_file.py [--quick] [--tokenizers char bytes bpe]
Writes bench/results/text_file.json (--quick: 20 MB, 5 steps, to $TMPDIR).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine_info, write_results
from image_folder import two_starts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "text_file.json"
CONFIG = "configs/char-gpt-shakespeare.yaml"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
OTHER = [
    "Ça fait déjà l'été: naïve façade, crème brûlée.",
    "Жили-были дед да баба, и была у них курочка Ряба.",
    "春眠不覺曉，處處聞啼鳥。",
    "The fox 🦊 met the bear 🐻 at the well 🪣.",
]


def make_text(path: Path, size: int) -> float:
    """A UTF-8 text of at least ``size`` bytes (skipped when already there)."""
    if path.exists() and path.stat().st_size >= size:
        return 0.0
    t0 = time.perf_counter()
    lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            order = lines[:]
            rng.shuffle(order)
            for i in range(0, len(order), 50):
                block = "".join(order[i : i + 50]) + rng.choice(OTHER) + "\n"
                fh.write(block)
                written += len(block.encode("utf-8"))
    return time.perf_counter() - t0


def arm(text: Path, tokenizer: str, steps: int, work: Path) -> list[dict]:
    """Two starts, the first on an empty cache; the token files' sizes with the second."""
    data = [f"data.path={text}", f"data.options.tokenizer={tokenizer}", "trainer.val_every=0"]
    runs, cache = two_starts(
        ROOT, CONFIG, data, steps, work, tokenizer, "first (tokenizes the text)"
    )
    for r in runs:
        r["tokenizer"] = tokenizer
    runs[-1]["token_file_bytes"] = {f.name: f.stat().st_size for f in cache.rglob("*.bin")}
    shutil.rmtree(cache, ignore_errors=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 MB, 5 steps, to $TMPDIR")
    ap.add_argument("--bytes", type=int, default=10**9)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tokenizers", nargs="+", default=["char", "bytes", "bpe"])
    args = ap.parse_args()
    t_start = time.perf_counter()
    size, steps = (20 * 10**6, 5) if args.quick else (args.bytes, args.steps)
    tmp = Path(tempfile.gettempdir())
    text = tmp / f"genlab-text-{size}.txt"
    out = tmp / "text_file.json" if args.quick else RESULTS
    work = tmp / "genlab-text-file-bench"
    work.mkdir(exist_ok=True)
    made = make_text(text, size)
    if made:
        print(f"made {text} in {made:.0f} s")
    chars, size = 0, text.stat().st_size
    with open(text, "rb") as fh:  # characters: the bytes that are not UTF-8 continuations
        while block := fh.read(1 << 24):
            chars += int(((np.frombuffer(block, np.uint8) & 0xC0) != 0x80).sum())
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "text_bytes": size,
        "text_chars": chars,
        "int64_char_tokens_bytes": 8 * chars,
        "steps": steps,
        "config": CONFIG,
    }
    record["runs"] = {t: arm(text, t, steps, work) for t in args.tokenizers}
    print(
        f"\nthe text: {record['text_bytes'] / 2**20:,.0f} MiB, {chars:,} characters; as int64 "
        f"character tokens {record['int64_char_tokens_bytes'] / 2**20:,.0f} MiB"
    )
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
