"""Latent-variable models: VAE and IWAE on binarized MNIST beside Burda et al.'s table and pythae's
VAE/IWAE trained in the same run, and the VQ-VAE with and without its EMA codebook and restarts.

Run (pythae rows need the bench environment, bench/README.md):
    OMP_NUM_THREADS=1 .bench-venv/bin/python bench/latent.py [--quick] [--steps N] [--skip vq]

(a) Binarized MNIST (the bundled 10k, 20% held out: 8,000 training images, 2,000 held out under
    one seeded binarization). The network of configs/vae-mnist.yaml (Burda et al.'s one stochastic
    layer: MLPs of 2 x 200 units, SiLU where they used tanh, 50 latents, Bernoulli decoder), trained for the same number
    of steps (``--steps``, batch 100, AdamW 1e-3 with genlab's warmup + cosine schedule, dynamic
    binarization) on the ELBO (VAE) and on the IWAE-5 bound (IWAE; ``--train-k``):
      - genlab: its trainer, configs/vae-mnist.yaml / configs/iwae-mnist.yaml;
      - pythae (``pythae.models.VAE`` / ``IWAE``, their objectives and reparameterization) on the
        *same modules*: pythae's encoder and decoder are thin wrappers around genlab's MLPs, built
        from the same seed, so the weights start equal; the loop (batches, binarization, optimizer,
        schedule) is this script's, identical for both. pythae's own trainer is not used: its
        defaults (Adam 1e-4, no schedule) would make a different comparison.
      - the bare PyTorch floor: ms per step of a hand-written ELBO step on the same modules.
    Every trained model is scored by the same estimator, genlab's IWAE-5000 (and the ELBO from the
    same draws), on the same binarized held-out images, beside Burda et al. (2016), Table 1, one
    stochastic layer, 60k training images: VAE 86.76, IWAE trained with k=50 84.78 (nats).
    The estimator is cross-checked against pythae's own ``get_nll`` on the same weights and images
    (a subset, k=1000; the two estimates differ by their Monte-Carlo noise only).
    The FD of 1,000 VAE samples on genlab's feature network, beside the real-data floor.
(c) Speed: ms per training step of genlab's trainer, pythae's objective in the same loop and a
    bare hand-written step (the floor), same modules and batch, interleaved rounds, medians.
(b) VQ-VAE (configs/vqvae-mnist.yaml: 512 codes of 16 dims on a 7x7 map, 1,500 steps): held-out
    reconstruction MSE, codebook usage (fraction of codes used on the 2,000 held-out images) and
    perplexity, with EMA + k-means init + restarts (the recipe), EMA alone, and the original
    codebook loss alone.

Prints tables and writes ``bench/results/latent.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, version, write_results

import genlab
from genlab.config import EvalConfig
from genlab.eval.heldout import LIKELIHOOD_SEED
from genlab.train.optim import lr_at
from genlab.train.trainer import Trainer

RESULTS = ROOT / "bench" / "results" / "latent.json"
BURDA = {"vae": 86.76, "iwae": 84.78}  # Table 1, one stochastic layer, k = 1 and k = 50 trained
sys.path.insert(0, str(ROOT / "bench"))


def config(name: str, steps: int, *extra: str):
    return genlab.load_config(
        ROOT / "configs" / f"{name}.yaml",
        [f"trainer.steps={steps}", "trainer.progress=false", "trainer.tensorboard=false",
         "trainer.val_every=0", "trainer.early_stopping=0", *extra],
    )  # fmt: skip


def genlab_train(name: str, steps: int, *extra: str):
    """``configs/<name>.yaml`` through genlab's trainer for ``steps`` steps (no validation or early
    stopping): ``(model in eval mode, dataset, seconds)``."""
    cfg = config(name, steps, *extra)
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.api.build_model(cfg, dataset)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(model, dataset, cfg, d)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        seconds = time.perf_counter() - t0
    return model.eval(), dataset, seconds


def pythae_model(vae, kind: str, train_k: int):
    """pythae's VAE or IWAE around ``vae``'s own encoder and decoder modules (shared, not copied):
    pythae's encoder sees the binarized image in {0, 1} and hands genlab's MLP ``2x - 1`` as
    genlab's does; its decoder returns Bernoulli means, as pythae's "bce" loss expects."""
    from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            mu, log_var = self.net(x * 2 - 1).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)[:, 0]))

    shape = tuple(vae.spec.shape)
    common = dict(input_dim=shape, latent_dim=vae.config.latent, reconstruction_loss="bce")
    if kind == "iwae":
        cfg, cls = IWAEConfig(number_samples=train_k, **common), IWAE
    else:
        cfg, cls = VAEConfig(**common), VAE
    return cls(cfg, encoder=Encoder(vae.encoder), decoder=Decoder(vae.decoder))


def pythae_train(name: str, kind: str, steps: int, train_k: int):
    """pythae's objective on genlab's network (same initial weights), this script's loop: the
    batches, binarization, optimizer and schedule of genlab's trainer. ``(genlab VAE holding the
    trained weights, pythae model, seconds)``."""
    cfg = config(name, steps)
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    vae = genlab.api.build_model(cfg, dataset)
    model = pythae_model(vae, kind, train_k)
    model.train()
    tc = cfg.trainer
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas,
                            weight_decay=tc.weight_decay)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = dataset.train
    order, at = torch.randperm(len(x), generator=g), 0
    t0 = time.perf_counter()
    for step in range(steps):
        if at + tc.batch_size > len(x):
            order, at = torch.randperm(len(x), generator=g), 0
        batch = vae.targets(x[order[at : at + tc.batch_size]], g)
        at += tc.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        loss = model({"data": batch}).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return vae.eval(), model.eval(), dataset, seconds


def floor_ms_per_step(name: str, rounds: int = 300) -> float:
    """A hand-written ELBO step (reparameterize, BCE with logits, closed-form KL, AdamW) on the
    same modules: the bare PyTorch floor, ms per step."""
    cfg = config(name, rounds)
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    vae = genlab.api.build_model(cfg, dataset)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times = []
    for step in range(rounds):
        t0 = time.perf_counter()
        t = vae.targets(dataset.train[(step * 100) % 7900 :][:100], g)
        mu, logvar = vae.encoder(t * 2 - 1).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(
            vae.decoder(z)[:, 0], t, reduction="sum"
        )
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum()
        loss = (rec + kl) / len(t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[20:])
    return 1000 * times[len(times) // 2]


def speed_section(rounds: int, steps: int, train_k: int) -> dict:
    """ms per training step of genlab's trainer, pythae's objective in the same loop, and the bare
    floor, on the same modules and batch, interleaved over ``rounds`` (the machine is shared:
    only ratios measured side by side mean something). ELBO (k = 1) and IWAE-``train_k``."""
    out = {}
    for kind, name in (("vae", "vae-mnist"), ("iwae", "iwae-mnist")):
        out[kind] = _speed_one(kind, name, rounds, steps, train_k)
    return out


def _speed_one(kind: str, name: str, rounds: int, steps: int, train_k: int) -> dict:
    """One family's interleaved timing (see :func:`speed_section`)."""
    extra = (f"model.train_k={train_k}",) if kind == "iwae" else ()
    cfg = config(name, 10**6, *extra)
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    ours = genlab.api.build_model(cfg, dataset)
    tmp = tempfile.TemporaryDirectory()
    trainer = Trainer(ours, dataset, cfg, tmp.name)
    torch.manual_seed(0)
    theirs_vae = genlab.api.build_model(cfg, dataset)
    theirs = pythae_model(theirs_vae, kind, train_k).train()
    opt_p = torch.optim.AdamW(theirs.parameters(), lr=1e-3)
    torch.manual_seed(0)
    bare = genlab.api.build_model(cfg, dataset)
    opt_b = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x, k = dataset.train, max(1, train_k if kind == "iwae" else 1)

    def batch():
        i = int(torch.randint(0, len(x) - 100, (1,), generator=g))
        return bare.targets(x[i : i + 100], g)

    def pythae_step():
        loss = theirs({"data": batch()}).loss
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    def bare_step():  # the ELBO (k = 1) or IWAE-k bound written out by hand
        t = batch()
        mu, logvar = bare.encoder(t * 2 - 1).chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn((len(t), k, mu.shape[1]), generator=g)
        z = mu[:, None] + std[:, None] * eps
        logits = bare.decoder(z.reshape(len(t) * k, -1))[:, 0].reshape(len(t), k, -1)
        rec = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, t.reshape(len(t), 1, -1).expand_as(logits), reduction="none"
        ).sum(-1)
        logw = rec - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + 0.5 * logvar.sum(-1)[:, None]
        loss = -(torch.logsumexp(logw, 1) - math.log(k)).mean()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    fns = {"genlab": trainer.train_step, "pythae": pythae_step, "bare": bare_step}
    times: dict[str, list[float]] = {key: [] for key in fns}
    for fn in fns.values():  # warm-up
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[key].append(1000 * (time.perf_counter() - t0) / steps)
    tmp.cleanup()
    med = {key: sorted(v)[len(v) // 2] for key, v in times.items()}
    row = {"ms_per_step": med, "rounds": rounds, "steps_per_round": steps,
           "genlab_over_bare": med["genlab"] / med["bare"],
           "pythae_over_genlab": med["pythae"] / med["genlab"]}  # fmt: skip
    print(f"  {kind:<5} ms/step (median of {rounds} interleaved rounds): genlab "
          f"{med['genlab']:.2f}, pythae {med['pythae']:.2f}, bare {med['bare']:.2f}; "
          f"genlab/bare {row['genlab_over_bare']:.2f}x, pythae/genlab "
          f"{row['pythae_over_genlab']:.2f}x", flush=True)  # fmt: skip
    return row


def bounds(vae, dataset, k: int) -> dict:
    """genlab's ELBO and IWAE-k of the held-out images (the seeded binarization of genlab eval)."""
    g = torch.Generator().manual_seed(LIKELIHOOD_SEED)
    t0 = time.perf_counter()
    elbo, iwae = vae.likelihoods(dataset.test, iwae_k=k, generator=g)  # the test split
    seconds = time.perf_counter() - t0
    n = len(dataset.test)

    def row(lp):
        nll = -lp.value.double()
        # the spread over images and each image's Monte-Carlo error, added in quadrature
        se = math.sqrt(float(nll.var()) / n + float((lp.stderr.double() ** 2).mean()) / n)
        return {"nll": float(nll.mean()), "stderr": se, "kind": lp.kind}

    return {"elbo": row(elbo), "iwae": row(iwae), "k": k, "n": n, "eval_seconds": seconds}


def cross_check(vae, pythae, dataset, n: int, k: int) -> dict:
    """genlab's IWAE-k and pythae's ``get_nll`` (k draws) on the same weights and binarized images."""
    g = torch.Generator().manual_seed(LIKELIHOOD_SEED)
    target = vae.targets(dataset.test[:n], g)
    lp = vae.likelihoods(dataset.test[:n], iwae_k=k, generator=torch.Generator().manual_seed(
        LIKELIHOOD_SEED))[-1]  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = -float(pythae.get_nll(target, n_samples=k, batch_size=min(k, 1000)))
    ours = -float(lp.value.double().mean())
    se = float((lp.stderr.double() ** 2).mean().sqrt()) / math.sqrt(n)
    return {"genlab": ours, "pythae_get_nll": theirs, "difference": ours - theirs,
            "genlab_mc_stderr": se, "n": n, "k": k}  # fmt: skip


def fd_of_samples(vae, dataset, n: int) -> dict:
    from genlab.eval.evaluate import evaluate

    cfg = EvalConfig(n=n, seeds=1, metrics=["fd"], nll=False)
    report = evaluate(vae, dataset, cfg)
    return {k: report["metrics"][k] for k in report["metrics"] if k.startswith("fd")}


def latent_section(steps: int, train_k: int, eval_k: int, check_n: int) -> dict:
    out: dict = {"steps": steps, "batch": 100, "train_k_iwae": train_k, "published": BURDA}
    have_pythae = version("pythae") is not None
    out["floor_ms_per_step"] = floor_ms_per_step("vae-mnist")
    print(f"  bare PyTorch ELBO step: {out['floor_ms_per_step']:.2f} ms", flush=True)
    for kind, name in (("vae", "vae-mnist"), ("iwae", "iwae-mnist")):
        extra = (f"model.train_k={train_k}",) if kind == "iwae" else ()
        model, dataset, sec = genlab_train(name, steps, *extra)
        row = {"seconds": sec, "ms_per_step": 1000 * sec / steps, **bounds(model, dataset, eval_k)}
        if kind == "vae":
            row["fd"] = fd_of_samples(model, dataset, 1000)
        out[f"genlab_{kind}"] = row
        _print(f"genlab {kind}", row)
        if not have_pythae:
            continue
        vae, pmodel, dataset, sec = pythae_train(name, kind, steps, train_k)
        row = {"seconds": sec, "ms_per_step": 1000 * sec / steps, **bounds(vae, dataset, eval_k)}
        row["cross_check"] = cross_check(vae, pmodel, dataset, check_n, 1000)
        out[f"pythae_{kind}"] = row
        _print(f"pythae {kind}", row)
        c = row["cross_check"]
        print(f"    estimator check on {c['n']} images, k={c['k']}: genlab {c['genlab']:.2f}, "
              f"pythae get_nll {c['pythae_get_nll']:.2f} nats", flush=True)  # fmt: skip
    return out


def _print(label: str, row: dict) -> None:
    e, i = row["elbo"], row["iwae"]
    print(f"  {label:<12} {row['ms_per_step']:6.2f} ms/step  -ELBO {e['nll']:7.2f} ± "
          f"{e['stderr']:.2f}   IWAE-{row['k']} NLL {i['nll']:7.2f} ± {i['stderr']:.2f} nats",
          flush=True)  # fmt: skip


def vq_section(steps: int) -> dict:
    variants = {
        "ema+kmeans+restarts": (),
        "ema only": ("model.kmeans_init=false", "model.restart=false"),
        "codebook loss only": ("model.ema=false", "model.kmeans_init=false", "model.restart=false"),
    }
    out = {"steps": steps}
    for label, extra in variants.items():
        model, dataset, sec = genlab_train("vqvae-mnist", steps, *extra)
        rep = {k: v["value"] for k, v in model.report(dataset).items()}
        out[label] = {"seconds": sec, **rep}
        print(f"  {label:<22} MSE {rep['reconstruction_mse']:.4f}  usage "
              f"{100 * rep['codebook_usage']:5.1f}% of 512  perplexity {rep['perplexity']:6.1f}",
              flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20_000, help="VAE / IWAE training steps")
    ap.add_argument("--train-k", type=int, default=5, help="IWAE training samples")
    ap.add_argument("--eval-k", type=int, default=5000, help="held-out IWAE-k")
    ap.add_argument("--check-n", type=int, default=200, help="images of the estimator check")
    ap.add_argument("--vq-steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=7, help="speed: interleaved rounds")
    ap.add_argument("--speed-steps", type=int, default=50, help="speed: steps per round")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: vae,speed,vq")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.eval_k, args.check_n, args.vq_steps = 50, 20, 10, 30
        args.rounds, args.speed_steps = 2, 5
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.perf_counter()
    record: dict = {
        "machine": {
            **machine_info(pythae=version("pythae")),
            "loadavg_before": list(os.getloadavg()),
        }
    }
    if "vae" not in skip:
        print(f"(a) binarized MNIST, {args.steps} steps each, IWAE-{args.eval_k}", flush=True)
        record["vae"] = latent_section(args.steps, args.train_k, args.eval_k, args.check_n)
    if "speed" not in skip and version("pythae") is not None:
        print("(c) ms per training step, interleaved", flush=True)
        record["speed"] = speed_section(args.rounds, args.speed_steps, args.train_k)
    if "vq" not in skip:
        print(f"(b) VQ-VAE on MNIST, {args.vq_steps} steps each", flush=True)
        record["vqvae"] = vq_section(args.vq_steps)
    quick_out = Path(tempfile.gettempdir()) / "latent.quick.json"
    write_results(record, RESULTS if not args.quick else quick_out, t_start)


if __name__ == "__main__":
    main()
