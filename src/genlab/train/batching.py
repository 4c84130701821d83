"""What the trainer feeds the model: shuffled epochs of examples or windows of a token stream,
per-step seeded generators, and a background prefetch of the next batches; each with a state that a
checkpoint saves, so a resumed run draws the same batches."""

from __future__ import annotations

import collections

import torch

from genlab.data.base import Batch
from genlab.data.store import Uint8Images
from genlab.errors import GenlabError


class EpochBatcher:
    """Shuffled minibatches from in-memory tensors, reproducible from ``(seed, epoch, position)``.

    Each epoch is a permutation drawn from a generator seeded by ``(seed, epoch)``, so the state to
    save is two integers; batches run across epoch boundaries, so any batch size works with any
    dataset size.
    """

    def __init__(
        self,
        x: torch.Tensor | Uint8Images,
        y: torch.Tensor | None,
        batch_size: int,
        seed: int,
        noise: torch.Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        hflip: bool = False,
    ) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.noise = noise  # paired noise (reflow), indexed like x
        self.device = torch.device(device) if device is not None else x.device
        self.hflip = hflip  # mirror each example left-right with probability 1/2
        self.epoch, self.pos = 0, 0
        self._perm, self._flip = self._permutation(0)

    def _permutation(self, epoch: int) -> tuple[torch.Tensor | Permutation, torch.Tensor | None]:
        """The epoch's order and, with ``hflip``, whether each position of it is mirrored: both
        drawn from ``(seed, epoch)``, so ``(epoch, pos)`` is the whole state. Past ``PERM_LIMIT``
        examples (the windows of a long text) the order is a :class:`Permutation` computed a
        batch at a time, not held."""
        n, key = len(self.x), self.seed * 1_000_003 + epoch
        if n > PERM_LIMIT and not self.hflip:
            return Permutation(n, key, self.x.device), None
        g = torch.Generator().manual_seed(key)
        perm = torch.randperm(n, generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.hflip else None
        where = self.x.device  # the examples' device: a uint8 store gathers where its bytes are
        return perm.to(where), flip

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm, self._flip = self._permutation(self.epoch)

    def next(self) -> Batch:
        n = len(self.x)
        if self.pos + self.batch_size <= n:  # the common case: one slice of one permutation
            sl = slice(self.pos, self.pos + self.batch_size)
            idx = self._perm[sl]
            flip = None if self._flip is None else self._flip[sl]
            self.pos += self.batch_size
        else:
            parts, flips, need = [], [], self.batch_size
            while need:
                if self.pos == n:
                    self.epoch, self.pos = self.epoch + 1, 0
                    self._perm, self._flip = self._permutation(self.epoch)
                take = min(need, n - self.pos)
                parts.append(self._perm[self.pos : self.pos + take])
                if self._flip is not None:
                    flips.append(self._flip[self.pos : self.pos + take])
                self.pos += take
                need -= take
            idx = torch.cat(parts)
            flip = torch.cat(flips) if flips else None
        if isinstance(self.x, Uint8Images):  # gathered as bytes, decoded on the device
            x = self.x.batch(idx, self.device)
        else:
            x = torch.index_select(self.x, 0, idx)
            if not x.is_floating_point() and x.dtype != torch.long:  # windows of a token file
                x = x.to(self.device, torch.long)
        if flip is not None:
            x = torch.where(flip.to(x.device).view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
        return Batch(
            x,
            None if self.y is None else torch.index_select(self.y, 0, idx),
            None if self.noise is None else torch.index_select(self.noise, 0, idx),
        )


#: epochs longer than this are ordered by a Permutation (a held randperm of 2**22 is 32 MiB)
PERM_LIMIT = 1 << 22


class Permutation:
    """A pseudo-random permutation of ``0 .. n-1`` keyed by ``key``, computed for the positions
    asked (``perm[a:b]``) and never held: a 4-round Feistel network on ``2k`` bits (``4**k >= n``)
    with cycle walking (a value at or past ``n`` is permuted again until it falls below ``n``;
    Black & Rogaway 2002). A bijection by construction, so an epoch still visits every example
    once."""

    ROUNDS = 4

    def __init__(self, n: int, key: int, device: torch.device | str = "cpu") -> None:
        self.n, self.device = int(n), torch.device(device)
        self.half = max(1, (max(self.n - 1, 1).bit_length() + 1) // 2)  # bits per half
        g = torch.Generator().manual_seed(key)
        self.keys = torch.randint(0, 1 << 31, (self.ROUNDS,), generator=g).tolist()

    def __len__(self) -> int:
        return self.n

    def _round(self, x: torch.Tensor, key: int) -> torch.Tensor:
        mask = (1 << self.half) - 1
        h = ((x + key) * 0x2C1B3C6D) & 0xFFFFFFFF  # an integer mix (each product < 2**63)
        h = h ^ (h >> 15)
        h = (h * 0x297A2D39) & 0xFFFFFFFF
        h = h ^ (h >> 13)
        return h & mask

    def _feistel(self, x: torch.Tensor) -> torch.Tensor:
        mask = (1 << self.half) - 1
        left, right = x >> self.half, x & mask
        for key in self.keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self.half) | right

    def __getitem__(self, sl: slice) -> torch.Tensor:
        start, stop, _ = sl.indices(self.n)
        x = torch.arange(start, stop, dtype=torch.long)
        y = self._feistel(x)
        out = y >= self.n
        while bool(out.any()):  # cycle walking: at most a few rounds (4**k < 4n)
            y[out] = self._feistel(y[out])
            out = y >= self.n
        return y.to(self.device)


def stream_windows(stream: torch.Tensor, length: int, stride: int, what: str) -> torch.Tensor:
    """The windows of ``length`` consecutive tokens of a 1-D ``stream`` starting every ``stride``
    tokens, ``(count, length)``: a view, no copy (``stride=1``: every offset, the training examples
    of a model with a ``window``; ``stride=length``: consecutive windows, for validation)."""
    if stream.dim() != 1:
        raise GenlabError(
            f"a model of windows of a token stream needs 1-D token data, got shape "
            f"{tuple(stream.shape)}"
        )
    if len(stream) < length:
        raise GenlabError(
            f"the {what} text has {len(stream)} tokens, fewer than one window of {length} (the "
            "model's context): give more text or lower model.context"
        )
    return stream.unfold(0, length, stride)


def step_generator(seed: int, draw: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of the randomness of batch number ``draw`` (one per step for one player; a
    GAN draws one batch per player update): a pure function of the seed and the draw, so prepared
    batches are the same on every rank, in every thread, after any resume."""
    return torch.Generator(device=device).manual_seed((seed + 1) * 2_654_435_761 + draw)


class Prefetcher:
    """Runs ``model.prepare`` (data- and randomness-only work, such as an OT coupling) for the next
    few batches in worker threads while the current step trains.

    Determinism: batches are drawn in the calling thread, in order; batch number ``k`` is prepared
    with its own generator seeded by ``(seed, k)``; results are consumed in order. So the prepared
    batches do not depend on thread timing, and resuming after ``k`` batches needs only the data
    position then, which is recorded with each submitted batch.
    """

    def __init__(
        self,
        batcher: EpochBatcher,
        prepare,
        seed: int,
        draw: int,
        device: torch.device,
        workers: int = 2,
        depth: int = 4,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.batcher, self.prepare, self.seed, self.device = batcher, prepare, seed, device
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="genlab-prepare")
        self.depth = depth
        self.next_draw = draw  # the number of the next batch to submit
        self.pending: collections.deque = collections.deque()
        self.consumed_state = batcher.state()

    def _fill(self) -> None:
        while len(self.pending) < self.depth:
            batch = self.batcher.next()
            gen = step_generator(self.seed, self.next_draw, self.device)
            fut = self.pool.submit(self.prepare, batch, gen)
            self.pending.append((fut, self.batcher.state()))
            self.next_draw += 1

    def next(self) -> Batch:
        self._fill()
        fut, state = self.pending.popleft()
        self.consumed_state = state
        batch = fut.result()
        self._fill()
        return batch

    def close(self) -> None:
        for fut, _ in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
