"""What a training run reports: the progress bar and the loss window behind each log line, the
JSONL/CSV/TensorBoard logger, the result of ``fit``, and the signal handler that stops the loop at a
step boundary."""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from genlab.progress import eta
from genlab.train.optim import lr_at

if TYPE_CHECKING:
    from genlab.train.trainer import Trainer


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_loss: float
    seconds: float
    steps_per_second: float  # of the steps trained in this invocation
    steps_trained: int = 0  # in this invocation (a resumed run counts from where it resumed)


class LossWindow:
    """The losses of each player and the rate since the last log line, the progress bar and the
    run's logger: what ``fit`` reports, kept out of the loop."""

    POSTFIX_EVERY = 1.0  # seconds between the bar's loss updates (each reads the device)

    def __init__(self, trainer: Trainer, logger: RunLogger) -> None:
        self.trainer, self.logger = trainer, logger
        tc = trainer.tc
        self.bar = tqdm(
            total=tc.steps,
            initial=trainer.step,
            disable=None if tc.progress and trainer.dist.is_main else True,  # None: not a tty
            desc=trainer.cfg.name,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        self.start_step, self.t_start = trainer.step, time.perf_counter()
        self.last_loss, self.logged = float("nan"), False
        # not on a terminal (a log file, CI, nohup): the bar is off, so a plain line every
        # trainer.progress_every seconds says where training is
        self.plain = bool(tc.progress and trainer.dist.is_main and self.bar.disable)
        self.t_line = self.t_post = self.t_start
        self.restart()

    def restart(self) -> None:
        dev = self.trainer.device
        self.sums = {ps.name: torch.zeros((), device=dev) for ps in self.trainer.players}
        self.counts = {ps.name: torch.zeros((), device=dev) for ps in self.trainer.players}
        self.steps, self.t0 = 0, time.perf_counter()
        self.bar.n = self.trainer.step

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, loss in losses.items():  # finite losses only (a skipped update reports none)
            ok = torch.isfinite(loss)
            self.sums[name] += torch.where(ok, loss, torch.zeros_like(loss))
            self.counts[name] += ok
        self.steps += 1
        self.bar.update(1)
        now = time.perf_counter()
        if not self.bar.disable and now - self.t_post >= self.POSTFIX_EVERY:  # the window's loss
            self.t_post = now  # (reading it synchronises the device: once a second at most)
            self.bar.set_postfix(self._window_means(), refresh=False)
        if self.plain and time.perf_counter() - self.t_line >= self.trainer.tc.progress_every:
            self.progress_line()

    @property
    def first_log(self) -> int:
        """The step whose window gives this invocation's first logged loss."""
        tc = self.trainer.tc
        return min((self.start_step // tc.log_every + 1) * tc.log_every, tc.steps)

    def progress_line(self) -> None:
        """``name: step k/N (p%), loss L, R steps/s, ETA T`` on stderr (the loss of the last
        logged window: reading the current one would synchronise the device)."""
        tr, now = self.trainer, time.perf_counter()
        self.t_line = now
        done = tr.step - self.start_step
        rate = done / max(now - self.t_start, 1e-9)
        left = max(tr.tc.steps - tr.step, 0) / max(rate, 1e-9)
        loss = (  # nothing logged yet: say when the first loss comes, not "nan"
            f"loss {self.last_loss:.4f}"
            if self.logged
            else f"loss first logged at step {self.first_log}"
        )
        print(
            f"{tr.cfg.name}: step {tr.step}/{tr.tc.steps} ({100 * tr.step / tr.tc.steps:.0f}%), "
            f"{loss}, {rate:.3g} steps/s, ETA {eta(left)}",
            file=sys.stderr, flush=True,
        )  # fmt: skip

    def write(self) -> None:
        tr = self.trainer
        counts = {k: float(v) for k, v in self.counts.items()}
        if not any(counts.values()):  # a window of skipped updates only has nothing to report
            return
        means = {k: float(self.sums[k]) / c for k, c in counts.items() if c > 0}
        if len(tr.players) == 1:
            row = {"loss": next(iter(means.values()))}
        else:
            row = {f"loss_{k}": v for k, v in means.items()}
        self.logged = True
        self.last_loss = (
            next(iter(row.values()))
            if len(row) == 1
            else row.get(f"loss_{tr.players[-1].name}", float("nan"))
        )
        peak = tr.players[0].player.lr
        lr = lr_at(tr.step - 1, tr.tc) * tr.lr_scale * ((peak or tr.tc.lr) / tr.tc.lr)
        rate = self.steps / max(time.perf_counter() - self.t0, 1e-9)
        self.logger.log(
            tr.step,
            {**row, **tr.model.training_stats(), "lr": lr, "steps_per_s": rate,
             "skipped_steps": int(tr.bad_steps)},
        )  # fmt: skip
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in row.items()}, refresh=False)
        self.restart()

    def _window_means(self) -> dict[str, str]:
        """The mean loss of each player over the steps of the window so far, for the bar."""
        out = {}
        for name, total in self.sums.items():
            count = float(self.counts[name])
            if count > 0:
                key = "loss" if len(self.sums) == 1 else f"loss_{name}"
                out[key] = f"{float(total) / count:.4f}"
        return out

    def note(self, text: str) -> None:
        self.bar.write(text)

    def close_bar(self) -> None:
        self.bar.close()

    def close(self) -> None:
        self.logger.close()

    def result(self) -> TrainResult:
        tr = self.trainer
        seconds = time.perf_counter() - self.t_start
        done = tr.step - self.start_step
        return TrainResult(
            tr.run_dir, tr.step, self.last_loss, seconds, done / max(seconds, 1e-9), done
        )


class StopOnSignal:
    """While training, SIGINT and SIGTERM ask the loop to stop at the next step boundary (where
    the state is consistent, so the checkpoint written then resumes exactly); a second signal
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


class RunLogger:
    """Metrics to ``metrics.jsonl`` and ``metrics.csv`` (one row per log step) and TensorBoard.
    A disabled logger (ranks other than 0) writes nothing."""

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, append: bool = False, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a" if append else "w")  # noqa: SIM115
        self.csv_path = run_dir / "metrics.csv"
        self.csv_rows: list[dict[str, Any]] = []
        if append and self.csv_path.exists():
            with open(self.csv_path) as f:
                self.csv_rows = list(csv.DictReader(f))
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # TensorBoard is an optional extra
                self.tb = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        self.csv_rows.append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        keys: list[str] = []
        for r in self.csv_rows:
            keys += [k for k in r if k not in keys]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.csv_rows)
        if self.tb is not None:
            self.tb.close()
