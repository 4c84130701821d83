"""genlab's GPT beside the transformers people use, on nanoGPT's CPU recipe for Tiny Shakespeare:
Hugging Face ``GPT2LMHeadModel`` and x-transformers (``TransformerWrapper`` + ``Decoder``, trained
through its ``AutoregressiveWrapper``), at equal size, steps, batch, optimizer and schedule.

Run:  OMP_NUM_THREADS=1 .bench-venv/bin/python bench/gpt_peers.py [--seeds 0 1 2] [--quick]
      (.bench-venv holds transformers and x-transformers: ``make bench-env``)

**The recipe** (nanoGPT's README, "I only have a macbook"; ``configs/nanogpt-cpu-shakespeare.yaml``):
4 layers, 4 heads, width 128, context 64, dropout 0, batch 12, 2,000 steps, AdamW (betas 0.9 /
0.99, weight decay 0.1 on matrices and embeddings, none on gains and biases), learning rate 1e-3
with 100 linear warm-up steps and a cosine to 1e-4 (genlab's ``lr_at``, the same function for every
arm), gradient norm clipped at 1.0, fused AdamW in every arm. The data: genlab's character loader
with nanoGPT's split (``data.val_fraction=0``, ``data.test_fraction=0.1``): the first 90% trains,
the last 10% (nanoGPT's validation part; genlab's test split under these options) is scored.
Nothing is selected or stopped early: every arm is scored after its 2,000th update.

**The arms.**
- ``genlab``: ``genlab.train`` on the config (its trainer, its batcher: shuffled window offsets;
  position 0 holds a start token, so a 64-character window gives 64 targets from 64 positions).
- ``hf-gpt2``: ``GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=65,
  dropouts 0))``, tied embeddings, the library's initialisation and its biases, SDPA attention;
  the loss is the library's own ``model(input_ids=x, labels=x).loss`` on 65-character windows
  (it shifts the labels: 64 targets from 65 positions).
- ``x-transformers``: ``TransformerWrapper(max_seq_len=65, attn_layers=Decoder(dim=128, depth=4,
  heads=4, attn_dim_head=32), tie_embedding=True)`` (``attn_dim_head`` defaults to 64, which would
  double the attention's width), its defaults otherwise (absolute positions, pre-LayerNorm, GELU
  feed-forward); the loss is ``AutoregressiveWrapper(net)(x)`` on 65-character windows (64 targets,
  65 positions).
  The peers' loops are the plain loops their READMEs show, on windows at random offsets of the
  training part drawn from a generator seeded with the seed (nanoGPT's ``get_batch``); the seed
  also seeds torch's global generator before the network is built (its initialisation).
  Parameter counts are recorded (within 1% of each other).

**Measured.**
  (i)   Held-out nats per character after 2,000 steps, on the same characters for every arm: the
        test part cut into consecutive 64-character windows, positions 1..63 of each window scored
        from the 1..63 characters before it (float64 log-softmax); the standard error over windows.
        genlab's every-position figure (position 0 from the start token alone) beside it.
        Mean and sample standard deviation over seeds. nanoGPT's README: 1.88 (bar <= 1.88).
  (ii)  Milliseconds per training step: one freshly built model per arm (seed 0), the arms' steps
        in interleaved rounds (the order rotating), the median over rounds; the ratio genlab / peer
        per round, its median. Also each arm's training wall time over its 2,000 steps.
  (iii) Sampling: characters per second with each library's KV cache, 256 new characters after a
        one-character prompt, 1 and 16 sequences, temperature 1 and no truncation (genlab
        ``model.sample(cache=True)``, HF ``generate(do_sample=True, top_k=0, use_cache=True)``,
        x-transformers ``generate(cache_kv=True)`` with the identity as filter), on networks of
        context 257 so no window slides (untrained weights: the cost does not depend on them);
        median over repeats.

Prints a table and writes ``bench/results/gpt_peers.json`` (``--quick``: 30 steps, a smoke test that
measures nothing, written to $TMPDIR).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, version, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "gpt_peers.json"
CONFIG = ROOT / "configs" / "nanogpt-cpu-shakespeare.yaml"
SPLIT = ["data.val_fraction=0", "data.test_fraction=0.1"]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]
README_LOSS = 1.88
ARMS = ("genlab", "hf-gpt2", "x-transformers")


def load_config(overrides: list[str]):
    import genlab

    return genlab.load_config(CONFIG, [*QUIET, *SPLIT, *overrides])


# --- the peers' networks and losses ---------------------------------------------------------------
def build_peer(arm: str, vocab: int, cfg, positions: int) -> torch.nn.Module:
    """The peer's network at the recipe's size, ``positions`` long."""
    m = cfg.model
    if arm == "hf-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        conf = GPT2Config(
            vocab_size=vocab, n_positions=positions, n_embd=m.hidden, n_layer=m.depth,
            n_head=m.heads, resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout,
            bos_token_id=None, eos_token_id=None, pad_token_id=None,
        )  # fmt: skip
        return GPT2LMHeadModel(conf)
    if arm == "x-transformers":
        from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

        net = TransformerWrapper(
            num_tokens=vocab, max_seq_len=positions, tie_embedding=True,
            attn_layers=Decoder(dim=m.hidden, depth=m.depth, heads=m.heads,
                                attn_dim_head=m.hidden // m.heads, attn_dropout=m.dropout,
                                ff_dropout=m.dropout),
        )  # fmt: skip
        return AutoregressiveWrapper(net)
    raise ValueError(arm)


def peer_loss(arm: str, model, x: torch.Tensor) -> torch.Tensor:
    """The library's own next-token loss on windows ``x`` ``(B, context + 1)``."""
    if arm == "hf-gpt2":
        return model(input_ids=x, labels=x).loss
    return model(x)


@torch.no_grad()
def peer_logits(arm: str, model, x: torch.Tensor) -> torch.Tensor:
    if arm == "hf-gpt2":
        return model(input_ids=x).logits
    return model.net(x)


def peer_stepper(arm: str, model, train: torch.Tensor, tc, context: int, seed: int):
    """One update of the peer's loop per call: a batch of ``context + 1``-character windows at
    random offsets, the library's loss, fused AdamW with decay on matrices only, clipping, the
    recipe's schedule."""
    from genlab.train.optim import lr_at

    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                            fused=True)  # fmt: skip
    offsets = torch.arange(context + 1)
    step = [0]

    def one() -> float:
        starts = torch.randint(0, len(train) - context, (tc.batch_size,), generator=g)
        x = train[starts[:, None] + offsets].long()
        loss = peer_loss(arm, model, x)
        for group in opt.param_groups:
            group["lr"] = lr_at(step[0], tc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        opt.step()
        step[0] += 1
        return float(loss.detach())

    return one


# --- scoring -----------------------------------------------------------------------------------------
def windows_of(stream: torch.Tensor, context: int) -> torch.Tensor:
    return stream[: len(stream) // context * context].reshape(-1, context).long()


@torch.no_grad()
def nats_per_position(predict, windows: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``(W, C - 1)``: nats of positions 1..C-1 of each window given the characters before it;
    ``predict(x)`` gives the logits of ``x[:, 1:]`` ``(B, C - 1, V)``."""
    out = []
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        logp = predict(x).double().log_softmax(-1)
        out.append(-logp.gather(-1, x[:, 1:, None])[..., 0])
    return torch.cat(out)


def summarize(nats: torch.Tensor) -> dict:
    """Mean nats per character and its standard error over windows."""
    per_window = nats.mean(1)
    return {"nats_per_char": float(nats.mean()),
            "stderr": float(per_window.std() / len(per_window) ** 0.5),
            "characters": int(nats.numel()), "windows": len(nats)}  # fmt: skip


# --- (i) training each arm ----------------------------------------------------------------------
def train_genlab(seed: int, overrides: list[str]) -> dict:
    import genlab

    cfg = load_config([*overrides, f"trainer.seed={seed}"])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = genlab.train(cfg, out, evaluate=False, verbose=False)
        seconds = time.perf_counter() - t0
    from autoregressive import per_position_nll

    model = run.model.eval()
    every = per_position_nll(model, run.dataset.test)  # (W, C), position 0 from the start token
    nats = every[:, 1:]
    params = sum(p.numel() for p in model.parameters())
    return {"arm": "genlab", "seed": seed, "parameters": params, "train_seconds": seconds,
            "steps": cfg.trainer.steps, **summarize(nats),
            "every_position": summarize(every)}  # fmt: skip


def train_peer(arm: str, seed: int, data, cfg) -> dict:
    C = cfg.model.context
    torch.manual_seed(seed)
    model = build_peer(arm, data.vocab_size, cfg, C + 1).train()
    step = peer_stepper(arm, model, data.train, cfg.trainer, C, seed)
    t0 = time.perf_counter()
    for i in range(cfg.trainer.steps):
        loss = step()
        if (i + 1) % 500 == 0 or i + 1 == cfg.trainer.steps:
            print(f"    {arm} step {i + 1}: train loss {loss:.4f}", flush=True)
    seconds = time.perf_counter() - t0
    model.eval()
    predict = lambda x: peer_logits(arm, model, x)[:, :-1]  # noqa: E731
    nats = nats_per_position(predict, windows_of(data.test, C))
    params = sum(p.numel() for p in model.parameters())
    return {"arm": arm, "seed": seed, "parameters": params, "train_seconds": seconds,
            "steps": cfg.trainer.steps, **summarize(nats)}  # fmt: skip


# --- (ii) interleaved step times ---------------------------------------------------------------------
def time_steps(data, cfg, rounds: int, per_round: int) -> dict:
    import genlab
    from genlab.train.trainer import Trainer

    C = cfg.model.context
    cfg = copy.deepcopy(cfg)
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory() as out:
        torch.manual_seed(0)
        tr = Trainer(genlab.build_model(cfg, data), data, cfg, out)
        tr.model.train()
        steppers = {"genlab": tr.train_step}
        for arm in ARMS[1:]:
            torch.manual_seed(0)
            model = build_peer(arm, data.vocab_size, cfg, C + 1).train()
            steppers[arm] = peer_stepper(arm, model, data.train, cfg.trainer, C, 0)
        for fn in steppers.values():  # warm up
            for _ in range(3):
                fn()
        for r in range(rounds):
            order = list(ARMS[r % 3 :] + ARMS[: r % 3])
            for name in order:
                t0 = time.perf_counter()
                for _ in range(per_round):
                    steppers[name]()
                times[name].append((time.perf_counter() - t0) / per_round)
    rec: dict = {"rounds": rounds, "steps_per_round": per_round,
                 "batch_size": cfg.trainer.batch_size, "context": C}  # fmt: skip
    for arm in ARMS:
        rec[f"{arm}_ms"] = 1e3 * statistics.median(times[arm])
    for arm in ARMS[1:]:
        ratios = [a / b for a, b in zip(times["genlab"], times[arm])]
        rec[f"ratio_vs_{arm}"] = statistics.median(ratios)
        rec[f"ratios_vs_{arm}"] = ratios
    return rec


# --- (iii) sampling with a KV cache ------------------------------------------------------------------
def time_sampling(data, length: int, batches: list[int], repeats: int, overrides) -> list[dict]:
    import genlab

    cfg = load_config([*overrides, f"model.context={length + 1}"])
    V = data.vocab_size
    torch.manual_seed(0)
    models = {"genlab": genlab.build_model(cfg, data).eval()}
    for arm in ARMS[1:]:
        torch.manual_seed(0)
        models[arm] = build_peer(arm, V, cfg, length + 1).eval()
    prompt_char = "\n"
    prompt_id = int(genlab.data.text.encode(prompt_char, data.meta["vocab"])[0])

    def sample(arm: str, n: int) -> torch.Tensor:
        m = models[arm]
        if arm == "genlab":
            out = m.sample(n, generator=torch.Generator().manual_seed(0), length=length,
                           prompt=prompt_char, cache=True)  # fmt: skip
            return out.x[:, 1:]
        prompt = torch.full((n, 1), prompt_id, dtype=torch.long)
        torch.manual_seed(0)
        with torch.no_grad():
            if arm == "hf-gpt2":
                from transformers import GenerationConfig

                gen = GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                       max_new_tokens=length, use_cache=True, eos_token_id=None,
                                       pad_token_id=0)  # fmt: skip
                out = m.generate(prompt, attention_mask=torch.ones_like(prompt),
                                 generation_config=gen)  # fmt: skip
                return out[:, 1:]
            return m.generate(prompt, length, cache_kv=True, filter_logits_fn=lambda z: z)

    rows = []
    for n in batches:
        for arm in ARMS:
            sample(arm, n)  # warm up
            secs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                x = sample(arm, n)
                secs.append(time.perf_counter() - t0)
            assert x.shape == (n, length), (arm, tuple(x.shape))
            rows.append({"arm": arm, "n": n, "length": length, "repeats": repeats,
                         "chars_per_s": n * length / statistics.median(secs)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: measures nothing")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--round-steps", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: train,steps,sample")
    ap.add_argument("--out", type=Path, help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    overrides, length, batches, repeats = [], 256, [1, 16], 3
    out = args.out or RESULTS
    if args.quick:
        overrides = ["trainer.steps=30", "trainer.warmup=5"]
        args.rounds, args.round_steps, args.seeds = 3, 2, args.seeds[:1]
        length, batches, repeats = 16, [1, 4], 1
        out = args.out or Path(tempfile.gettempdir()) / "gpt_peers-quick.json"
    import genlab

    t_start = time.perf_counter()
    peers = {"transformers": version("transformers"), "x_transformers": version("x-transformers")}
    record: dict = {"machine": {**machine_info(**peers), "loadavg_before": list(os.getloadavg())},
                    "quick": args.quick, "threads": torch.get_num_threads(),
                    "config": str(CONFIG.relative_to(ROOT)), "overrides": [*SPLIT, *overrides],
                    "readme_loss": README_LOSS}  # fmt: skip
    from genlab.data.tokenizer import tokenizer_of

    cfg = load_config(overrides)
    data = genlab.load_data(cfg)
    data.vocab_size = tokenizer_of(data.meta["vocab"]).vocab_size  # the escape id included
    print(f"torch threads {torch.get_num_threads()}; train {len(data.train):,} characters, "
          f"test {len(data.test):,}; vocabulary {data.vocab_size}")  # fmt: skip
    if "steps" not in skip:
        t = time_steps(data, cfg, args.rounds, args.round_steps)
        record["train_step"] = t
        print(f"\n(ii) ms per training step, batch {t['batch_size']} x {t['context']}, "
              f"{t['rounds']} interleaved rounds of {t['steps_per_round']}")  # fmt: skip
        for arm in ARMS:
            extra = "" if arm == "genlab" else f"  genlab / {arm}: {t[f'ratio_vs_{arm}']:.3f}"
            print(f"  {arm:<15} {t[f'{arm}_ms']:7.2f} ms{extra}")
    if "sample" not in skip:
        rows = time_sampling(data, length, batches, repeats, overrides)
        record["sampling"] = rows
        print(f"\n(iii) sampling {length} characters with a KV cache: characters per second")
        for r in rows:
            print(f"  {r['arm']:<15} n={r['n']:<3} {r['chars_per_s']:9.0f}")
    if "train" not in skip:
        runs = []
        for seed in args.seeds:
            for arm in ARMS:
                print(f"\n(i) {arm}, seed {seed}", flush=True)
                r = train_genlab(seed, overrides) if arm == "genlab" else train_peer(
                    arm, seed, data, cfg)  # fmt: skip
                runs.append(r)
                print(f"  {r['parameters']:,} parameters, {r['train_seconds']:.0f} s; held-out "
                      f"{r['nats_per_char']:.4f} ± {r['stderr']:.4f} nats/char (positions 1-63)")  # fmt: skip
        summary = {}
        for arm in ARMS:
            mine = [r for r in runs if r["arm"] == arm]
            row = {"parameters": mine[0]["parameters"], "seeds": [r["seed"] for r in mine]}
            for key in ("nats_per_char", "train_seconds"):
                vals = [r[key] for r in mine]
                row[key] = {"mean": statistics.fmean(vals),
                            "sd": statistics.stdev(vals) if len(vals) > 1 else None}  # fmt: skip
            summary[arm] = row
        g = [r["every_position"]["nats_per_char"] for r in runs if r["arm"] == "genlab"]
        summary["genlab"]["every_position"] = statistics.fmean(g)
        record["runs"], record["summary"] = runs, summary
        print(f"\n(i) held-out nats/char, positions 1-63, seeds {args.seeds} (README 1.88)")
        for arm in ARMS:
            s = summary[arm]["nats_per_char"]
            sd = "" if s["sd"] is None else f" ± {s['sd']:.4f}"
            print(f"  {arm:<15} {s['mean']:.4f}{sd}  ({summary[arm]['parameters']:,} parameters)")
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
