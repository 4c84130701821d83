"""One training loop for every family.

AdamW with linear warmup and a cosine schedule, global-norm gradient clipping, an EMA of the weights,
optional autocast, a progress bar, JSONL/CSV/TensorBoard logs, periodic evaluation with sample plots,
and checkpoints that resume exactly: a run stopped at step k and resumed reaches the same weights as
an uninterrupted run (the data position, the training RNG, the optimizer, the schedule and the EMA are
all saved).

The hot loop does no host synchronisation: the loss is accumulated on the device and read only every
``log_every`` steps.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import Config
from genlab.data.base import Batch, Dataset
from genlab.data.store import Uint8Images
from genlab.errors import CheckpointError, GenlabError
from genlab.io import load_state_dict_checked
from genlab.models.base import GenerativeModel, Player
from genlab.train import distributed
from genlab.train.batching import EpochBatcher, Prefetcher, step_generator, stream_windows
from genlab.train.device import resolve_device
from genlab.train.logs import LossWindow, RunLogger, StopOnSignal, TrainResult
from genlab.train.optim import ema_decay_at, lr_at, make_optimizer, swap_weights


@dataclass
class PlayerState:
    """A player as the trainer holds it: its parameters, optimizer, fp16 scaler and EMA."""

    player: Player
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: list[torch.Tensor] | None

    @property
    def name(self) -> str:
        return self.player.name

    @property
    def fused(self) -> bool:
        return bool(self.optimizer.defaults.get("fused"))


class Trainer:
    """Train ``model`` on ``dataset`` as ``config.trainer`` says, writing the run to ``run_dir``.

    The model's players (:meth:`~genlab.models.base.GenerativeModel.players`) are updated in order
    each step, each with its own AdamW, learning-rate schedule, gradient guard, data-parallel
    averaging and optimizer state in the checkpoint; gradients go only into the player's own
    parameters. Each update draws its own batch, prepared with a generator seeded by the number of
    batches drawn so far, so runs resume exactly and match across process counts."""

    def __init__(
        self,
        model: GenerativeModel,
        dataset: Dataset,
        config: Config,
        run_dir: str | Path,
        *,
        evaluate_fn: Any = None,
        dist_info: distributed.DistInfo | None = None,
    ) -> None:
        self.cfg = config
        self.tc = config.trainer
        self.run_dir = Path(run_dir)
        self.dataset = dataset
        self.dist = dist_info or distributed.from_env()
        if self.tc.batch_size % self.dist.world:
            raise GenlabError(
                f"trainer.batch_size={self.tc.batch_size} (the global batch) must be divisible by "
                f"the number of processes ({self.dist.world})"
            )
        self.device = distributed.setup(self.dist, resolve_device(self.tc.device))
        cpus = os.cpu_count() or 1
        self.prefetch_workers = 1 if cpus <= 4 else 2
        #: torch intra-op threads while training (None: leave torch's setting). With batches
        #: prepared in worker threads on the CPU, the workers get their cores (torch threads and
        #: solver threads competing for the same cores slow both; docs/flow-matching.md).
        self.threads: int | None = self.tc.threads or None
        if self.threads is None and model.prepares_batches and self.device.type == "cpu":
            self.threads = max(1, cpus - self.prefetch_workers)
        self.model = model.to(self.device)
        if self.tc.channels_last:  # 4-D weights (convolutions) in NHWC order; batches follow
            self.model = self.model.to(memory_format=torch.channels_last)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.tc.precision)
        if amp is torch.float16 and self.device.type != "cuda":
            raise GenlabError("trainer.precision=fp16 needs a CUDA device; use bf16 on the CPU")
        self.autocast_dtype = amp
        self.players = self._make_players(amp is torch.float16)
        if self.tc.compile:
            self._compile()
        self.bad_steps = torch.zeros((), dtype=torch.long, device=self.device)  # skipped updates
        self.consecutive_bad = torch.zeros((), dtype=torch.long, device=self.device)
        self.lr_scale = 1.0  # lowered by each rollback after a divergence
        self.rollbacks = 0
        torch.manual_seed(self.tc.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.tc.seed)
        train = _on_device(dataset.train, self.device)
        if model.window is not None:  # examples: windows of the stream at every offset
            train = stream_windows(train, model.window, 1, "training")
        if self.tc.hflip and dataset.kind != "images":
            raise GenlabError(
                f"trainer.hflip mirrors images; {dataset.name!r} holds {dataset.kind}"
            )
        self.batcher = EpochBatcher(
            train,
            None if dataset.labels_train is None else dataset.labels_train.to(self.device),
            self.tc.batch_size,
            self.tc.seed,
            None if dataset.noise_train is None else dataset.noise_train.to(self.device),
            device=self.device,
            hflip=self.tc.hflip,
        )
        self.step = 0
        self.draws = 0  # batches drawn so far (= steps for a model with one player)
        self.stopped_early = False
        self.best_val = math.inf  # lowest validation loss so far
        self.stale_vals = 0  # validations since it improved
        self.prefetcher: Prefetcher | None = None
        self.evaluate_fn = evaluate_fn
        self.eval_history: dict[str, list[float]] = {}  # periodic evaluations, for their checks

    def _make_players(self, fp16: bool) -> list[PlayerState]:
        """The model's players with their optimizers; every trainable parameter belongs to
        exactly one of them."""
        players, owner = [], {}
        for p in self.model.players():
            if p.updates < 1 or p.start < 0:
                raise GenlabError(f"player {p.name!r}: updates must be >= 1 and start >= 0")
            params = [q for q in p.module.parameters() if q.requires_grad]
            for q in params:
                if id(q) in owner:
                    raise GenlabError(
                        f"a parameter belongs to players {owner[id(q)]!r} and {p.name!r}"
                    )
                owner[id(q)] = p.name
            ema = None
            if self.tc.ema_decay > 0 and p.ema:
                ema = [q.detach().clone() for q in params]
            opt = make_optimizer(params, self.tc, self.device, p)
            scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
            players.append(PlayerState(p, params, opt, scaler, ema))
        missing = [
            n for n, q in self.model.named_parameters() if q.requires_grad and id(q) not in owner
        ]
        if missing:
            raise GenlabError(
                f"parameter {missing[0]!r} belongs to no player of {self.model.family}"
            )
        return players

    def _compile(self) -> None:
        """``trainer.compile``: compile the forward of each player's networks in place
        (``nn.Module.compile``: the parameters, state-dict keys and checkpoints are unchanged).
        Where ``torch.compile`` cannot run (no C++ compiler, an unsupported platform) it says why
        on stderr and trains uncompiled."""
        reason = compile_unavailable(self.device)
        if reason:
            print(f"trainer.compile: {reason}; training without compilation", file=sys.stderr)
            return
        for ps in self.players:
            module = ps.player.module
            for net in list(module.children()) or [module]:
                net.compile()

    # --- what tests and callers read --------------------------------------------------------------
    @property
    def params(self) -> list[torch.nn.Parameter]:
        """Every trainable parameter, player by player."""
        return [q for ps in self.players for q in ps.params]

    @property
    def ema_params(self) -> list[torch.nn.Parameter]:
        return [q for ps in self.players if ps.ema is not None for q in ps.params]

    @property
    def ema(self) -> list[torch.Tensor] | None:
        """The EMA of the players that keep one, aligned with :attr:`ema_params` (None: none)."""
        out = [e for ps in self.players if ps.ema is not None for e in ps.ema]
        return out or None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of a model with one player."""
        if len(self.players) != 1:
            raise AttributeError("this model has several players: see Trainer.players")
        return self.players[0].optimizer

    # --- state ----------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _optim_prefix(self, ps: PlayerState) -> str:
        # one player keeps the key names of checkpoints written before players existed
        return "optim." if len(self.players) == 1 else f"optim.{ps.name}."

    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        names = {id(q): n for n, q in self.model.named_parameters()}
        for ps in self.players:
            if ps.ema is not None:
                t.update({f"ema.{names[id(q)]}": e for q, e in zip(ps.params, ps.ema)})
            prefix = self._optim_prefix(ps)
            for i, st in ps.optimizer.state_dict()["state"].items():
                for k, v in st.items():
                    t[f"{prefix}{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        t["rng.train"] = self.generator.get_state()
        t["rng.global"] = torch.get_rng_state()
        return t

    def save(self, name: str | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only; the others wait until it is on disk)."""
        if not self.dist.is_main:
            distributed.barrier(self.dist)
            return None
        meta = {
            "spec": self.model.spec.to_dict(),
            "config": self.cfg.to_dict(),
            "data_position": self.data_position(),
            "draws": self.draws_consumed(),
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "stale_vals": self.stale_vals,
            "skipped_steps": int(self.bad_steps),
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "torch_version": torch.__version__,
        }
        path = ckpt.save_checkpoint(
            self.checkpoint_dir, self.step, self.state_tensors(), meta, self.tc.keep_last, name
        )
        distributed.barrier(self.dist)
        return path

    def restore(self) -> bool:
        """Load the newest good checkpoint of this run; False when there is none."""
        found = ckpt.load_latest(self.checkpoint_dir)
        if found is None:
            return False
        tensors, meta = found
        where = f"checkpoint step {meta['step']}"
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        load_state_dict_checked(self.model, model_state, where)
        names = {id(q): n for n, q in self.model.named_parameters()}
        for ps in self.players:
            if ps.ema is not None:
                for q, e in zip(ps.params, ps.ema):
                    key = f"ema.{names[id(q)]}"
                    if key not in tensors:
                        raise CheckpointError(f"{where} has no EMA for {names[id(q)]!r}")
                    e.copy_(tensors[key])
            prefix = self._optim_prefix(ps)
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                rest = k[len(prefix) :]
                if k.startswith(prefix) and rest.split(".", 1)[0].isdigit():
                    i, name = rest.split(".", 1)
                    state.setdefault(int(i), {})[name] = v
            opt_state = ps.optimizer.state_dict()
            opt_state["state"] = state
            ps.optimizer.load_state_dict(opt_state)
            # each state tensor in its parameter's memory order (saved contiguous): the fused
            # AdamW walks a parameter and its moments in step, so a channels_last parameter
            # with contiguous moments would pair the wrong elements
            for q in ps.params:
                for key, v in ps.optimizer.state.get(q, {}).items():
                    if (
                        isinstance(v, torch.Tensor)
                        and v.shape == q.shape
                        and v.stride() != q.stride()
                    ):
                        ps.optimizer.state[q][key] = torch.empty_like(q, dtype=v.dtype).copy_(v)
        self.generator.set_state(tensors["rng.train"])
        torch.set_rng_state(tensors["rng.global"])
        self.close()
        self.batcher.load_state(meta["data_position"])
        self.step = int(meta["step"])
        self.draws = int(meta.get("draws", self.step))  # (one draw per step before players)
        best = meta.get("best_val")
        self.best_val = math.inf if best is None else float(best)
        self.stale_vals = int(meta.get("stale_vals", 0))
        self.bad_steps.fill_(int(meta.get("skipped_steps", 0)))
        self.consecutive_bad.zero_()
        self.lr_scale = float(meta.get("lr_scale", 1.0))
        self.rollbacks = int(meta.get("rollbacks", 0))
        return True

    def handle_divergence(self, what: str, advice: str | None = None) -> None:
        """Training went wrong (``what``): stop with a clear message (what happened, and
        ``advice``), or reload the last checkpoint with a lower learning rate
        (``trainer.on_divergence``)."""
        advice = advice or (
            "Lower trainer.lr, set trainer.grad_clip, and check the data for extreme values"
        )
        kept = " (the last good checkpoint is kept)"
        if self.tc.on_divergence == "stop":
            raise GenlabError(f"{what}; stopping{kept}. {advice}")
        if self.rollbacks >= 3:
            raise GenlabError(f"{what}, after 3 rollbacks; stopping{kept}. {advice}")
        if not ckpt.list_checkpoints(self.checkpoint_dir):
            raise GenlabError(f"{what}, and there is no checkpoint to roll back to. {advice}")
        scale, rollbacks = self.lr_scale * self.tc.rollback_lr_factor, self.rollbacks + 1
        self.restore()
        self.lr_scale, self.rollbacks = scale, rollbacks

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss over the validation split (or ``val_batches`` batches of it) with the weights
        used for sampling (the EMA), with a fixed generator so checks compare like with like."""
        val = self.dataset.val
        if len(val) == 0:
            raise GenlabError("trainer.val_every is set but the validation split is empty")
        if self.model.window is not None:  # consecutive windows of the held-out stream
            val = stream_windows(val, self.model.window, self.model.window, "validation")
        labels = self.dataset.labels_val
        g = torch.Generator(device=self.device).manual_seed(self.tc.seed + 7)
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        with self.ema_weights():
            for i, start in enumerate(range(0, len(val), self.tc.batch_size)):
                if self.tc.val_batches and i >= self.tc.val_batches:
                    break
                x = val[start : start + self.tc.batch_size].to(self.device)
                if self.model.window is not None:  # a token file's uint8 / uint16 / int32
                    x = x.long()
                y = None if labels is None else labels[start : start + len(x)].to(self.device)
                noise = self.dataset.noise_val
                if noise is not None:
                    noise = noise[start : start + len(x)].to(self.device)
                batch = self.model.prepare(Batch(x, y, noise), g)
                total += float(self.model.loss(batch, g)) * len(x)
                count += len(x)
        self.model.train(was_training)
        return total / count

    # --- one step -------------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        """This rank's share of the next global batch, prepared (noise, times, pairing)."""
        if self.model.prepares_batches:  # worth doing ahead, in worker threads
            if self.prefetcher is None:
                self.prefetcher = Prefetcher(
                    self.batcher,
                    self.model.prepare,
                    self.tc.seed,
                    self.draws,
                    self.device,
                    self.prefetch_workers,
                )
            batch = self.prefetcher.next()
        else:
            gen = step_generator(self.tc.seed, self.draws, self.device)
            batch = self.model.prepare(self.batcher.next(), gen)
        self.draws += 1
        if self.dist.enabled:
            batch = batch.shard(self.dist.rank, self.dist.world)
        return _channels_last(batch) if self.tc.channels_last else batch

    def data_position(self) -> dict[str, int]:
        """Where the data stream stands after the batches consumed so far."""
        return self.prefetcher.consumed_state if self.prefetcher else self.batcher.state()

    def draws_consumed(self) -> int:
        return self.draws

    def close(self) -> None:
        """Stop background work (the prefetch threads); the trainer can go on afterwards."""
        if self.prefetcher is not None:
            self.batcher.load_state(self.prefetcher.consumed_state)
            self.prefetcher.close()
            self.prefetcher = None

    def train_step(self) -> dict[str, torch.Tensor]:
        """One training step: each player's updates in order, then the EMA. Returns each
        player's last loss as a device tensor (no host sync)."""
        losses = {}
        for ps in self.players:
            if self.step < ps.player.start:
                continue
            for _ in range(ps.player.updates):
                losses[ps.name] = self._update(ps, self.next_batch())
        self.step += 1
        tc = self.tc
        if self.step % tc.ema_every == 0:
            decay = ema_decay_at(self.step - 1, tc.ema_decay) ** tc.ema_every
            for ps in self.players:
                if ps.ema is not None:
                    torch._foreach_lerp_(ps.ema, ps.params, 1.0 - decay)
        return losses

    def _update(self, ps: PlayerState, batch: Batch) -> torch.Tensor:
        """One optimizer update of one player; the loss as a device tensor.

        A non-finite update is skipped (the weights and optimizer state stay as they were) and
        counted in ``self.bad_steps``; with the fused optimizer this costs no host sync: the
        gradient norm, the clipping factor and the skip flag go to the fused kernel
        (``grad_scale``/``found_inf``, the interface ``GradScaler`` uses)."""
        tc = self.tc
        peak = tc.lr if ps.player.lr is None else ps.player.lr
        lr = lr_at(self.step, tc) * self.lr_scale * (peak / tc.lr)
        for group in ps.optimizer.param_groups:
            group["lr"] = lr
        if self.autocast_dtype is None:  # (entering a disabled autocast still costs ~10 us)
            loss = self.model.player_loss(ps.name, batch, self.generator)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                loss = self.model.player_loss(ps.name, batch, self.generator)
        ps.optimizer.zero_grad(set_to_none=True)
        inputs = {} if len(self.players) == 1 else {"inputs": ps.params}  # only its own grads
        if ps.scaler.is_enabled():  # fp16 on CUDA: the scaler owns unscaling and inf checks
            ps.scaler.scale(loss).backward(**inputs)
            if self.dist.enabled:
                distributed.average_gradients(ps.params, self.dist.world)
            if tc.grad_clip > 0:
                ps.scaler.unscale_(ps.optimizer)
                torch.nn.utils.clip_grad_norm_(ps.params, tc.grad_clip, foreach=True)
            scale = ps.scaler.get_scale()
            ps.scaler.step(ps.optimizer)  # skipped when a gradient is not finite ...
            ps.scaler.update()  # ... and then the scale drops
            self._count_bad(torch.tensor(ps.scaler.get_scale() < scale, device=self.device))
        else:
            loss.backward(**inputs)
            if self.dist.enabled:  # the global mean loss rides along in the gradient all-reduce
                loss = distributed.average_gradients(ps.params, self.dist.world, loss.detach())
            self._clip_and_guard(ps, loss)
        self.model.after_update(ps.name)
        return loss.detach()

    def _count_bad(self, bad: torch.Tensor) -> None:
        """Count a skipped update (``bad``: a bool device tensor), in all and in a row."""
        self.bad_steps += bad
        self.consecutive_bad.add_(1).mul_(bad)  # +1 on a bad update, back to 0 on a good one

    def _clip_and_guard(self, ps: PlayerState, loss: torch.Tensor) -> None:
        """Clip the player's gradient to ``grad_clip`` in global norm (when set) and skip the
        update when the gradient norm (with clipping) or the loss (without) is not finite. Without
        clipping the check costs one scalar op: a finite loss has finite gradients unless backward
        overflows, and then the next loss is not finite and that update is skipped."""
        clip = self.tc.grad_clip
        if clip > 0:
            grads = [p.grad for p in ps.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            bad = ~torch.isfinite(norm)
        else:
            bad = ~torch.isfinite(loss.detach())
        self._count_bad(bad)
        if ps.fused:
            ps.optimizer.found_inf = bad.float()  # the fused kernel skips the update
            if clip > 0:  # the fused kernel divides the gradients by this
                ps.optimizer.grad_scale = torch.clamp(norm / clip, min=1.0)
            ps.optimizer.step()
        elif not bool(bad):  # unfused fallback: one host sync per update
            if clip > 0:
                torch._foreach_mul_(grads, torch.clamp(clip / norm, max=1.0))
            ps.optimizer.step()

    # --- the loop -------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train to ``trainer.steps`` (or stop early after step ``stop_at``, saving a checkpoint
        there, as an interrupted run would)."""
        end = self.tc.steps if stop_at is None else min(stop_at, self.tc.steps)
        self._begin(resume)
        log = LossWindow(self, RunLogger(
            self.run_dir, tensorboard=self.tc.tensorboard, append=resume, enabled=self.dist.is_main
        ))  # fmt: skip
        handlers = StopOnSignal()
        threads_before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model.train()
        try:
            while self.step < end:
                if handlers.requested:  # SIGINT/SIGTERM arrived: stop at this step boundary
                    raise KeyboardInterrupt
                log.add(self.train_step())
                if self.step % self.tc.log_every == 0 or self.step == end:
                    if self._diverged(log):  # rolled back to the last checkpoint
                        continue
                    log.write()
                if self._validate_if_due(log):
                    break  # early stopping
                if self.step % self.tc.checkpoint_every == 0 and self.step < self.tc.steps:
                    self.save()
                self._evaluate_if_due(log)
        except KeyboardInterrupt:  # Ctrl-C: keep the work done so far, then stop
            self.save()
            log.close()
            raise
        finally:
            torch.set_num_threads(threads_before)
            handlers.restore()
            log.close_bar()
            self.close()
        self.save()
        log.close()
        return log.result()

    def _begin(self, resume: bool) -> None:
        """Restore the run (``resume``) or refuse to overwrite one; write its config."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self.restore():
                raise CheckpointError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        elif ckpt.list_checkpoints(self.checkpoint_dir):
            raise GenlabError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose "
                "another --out"
            )
        if self.dist.is_main:  # rank 0 alone writes
            self.cfg.save(self.run_dir / "config.yaml")

    def _diverged(self, log: LossWindow) -> bool:
        """After ``trainer.max_skipped`` non-finite updates in a row, or when the model reports a
        divergence of its own (:meth:`~genlab.models.base.GenerativeModel.divergence`): stop (an
        error that says what happened; the last good checkpoint stays) or roll back (True: the
        window starts again from the restored step)."""
        consecutive = int(self.consecutive_bad)
        if self.tc.max_skipped and consecutive >= self.tc.max_skipped:
            what = (
                f"{consecutive} steps in a row (to step {self.step}) had a non-finite loss or "
                "gradient"
            )
            self.handle_divergence(what)  # raises, or rolls back
        else:
            reason = self.model.divergence()
            if reason is None:
                return False
            what, _, advice = reason.partition("; ")
            self.handle_divergence(f"step {self.step}: {what}", advice[:1].upper() + advice[1:])
        log.logger.log(self.step, {"rollback": self.rollbacks, "lr_scale": self.lr_scale})
        log.note(
            f"rolled back to step {self.step} after a divergence; learning rate x{self.lr_scale:g}"
        )
        log.restart()
        return True

    def _validate_if_due(self, log: LossWindow) -> bool:
        """Validation every ``val_every`` steps, keeping the best checkpoint; True when early
        stopping ends the run."""
        tc = self.tc
        if not (tc.val_every and self.step % tc.val_every == 0):
            return False
        val = self.validate()
        improved = val < self.best_val
        if improved:
            self.best_val, self.stale_vals = val, 0
        else:
            self.stale_vals += 1
        log.logger.log(self.step, {"val_loss": val, "best_val_loss": self.best_val})
        if improved:
            self.save(ckpt.BEST)
        if tc.early_stopping and self.stale_vals >= tc.early_stopping:
            self.stopped_early = True
            log.note(
                f"early stopping at step {self.step}: no better validation loss in "
                f"{self.stale_vals} checks (best {self.best_val:.4f})"
            )
            return True
        return False

    def _evaluate_if_due(self, log: LossWindow) -> None:
        tc = self.tc
        due = tc.eval_every and self.step % tc.eval_every == 0
        if due and self.evaluate_fn and self.dist.is_main:
            with self.ema_weights():
                log.logger.log(self.step, self.evaluate_fn(self))
            self.model.train()

    def ema_weights(self):
        """Context manager: the model carries the EMA weights inside, its own weights after."""
        return swap_weights(self.ema_params, self.ema)

    def use_ema_weights(self) -> None:
        """Load the EMA into the model for good (after training: sampling and evaluation use the
        averaged weights). Nothing happens without an EMA."""
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_copy_(self.ema_params, self.ema)


def _channels_last(batch: Batch) -> Batch:
    """``trainer.channels_last``: the batch's images (and their noise) in NHWC memory order."""

    def nhwc(t):
        is_image = isinstance(t, torch.Tensor) and t.dim() == 4
        return t.contiguous(memory_format=torch.channels_last) if is_image else t

    return Batch(nhwc(batch.x), batch.y, nhwc(batch.noise), batch.t, batch.aux)


DEVICE_BYTES = 2**30  # uint8 training images up to this size are copied to a GPU once


def _on_device(x: torch.Tensor | Uint8Images, device: torch.device) -> torch.Tensor | Uint8Images:
    """The training examples where the batches are drawn: tensors on ``device``; uint8 images
    stay bytes, on a GPU in one copy when they fit in :data:`DEVICE_BYTES`, else on the host
    (in memory or mapped from their file), each batch then gathered there and sent as uint8."""
    if not isinstance(x, Uint8Images):
        return x.to(device)
    if device.type != "cpu" and x.numel() <= DEVICE_BYTES:  # one byte per value
        return x.to_device_uint8(device)
    return x


_COMPILE_CHECKED: dict[str, str | None] = {}


def compile_unavailable(device: torch.device) -> str | None:
    """None when ``torch.compile`` compiles and runs a small function on ``device``, else why not
    (checked once per device type and process)."""
    key = device.type
    if key not in _COMPILE_CHECKED:
        try:
            f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
            f(torch.ones(4, device=device))
            _COMPILE_CHECKED[key] = None
        except Exception as e:  # any failure of the compiler stack means: not here
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _COMPILE_CHECKED[key] = (
                f"torch.compile is unavailable on {key} ({type(e).__name__}: {first[:200]})"
            )
    return _COMPILE_CHECKED[key]
