"""Images kept as bytes until a batch is made.

An image set is stored as uint8 ``(N, C, H, W)`` rows, in memory or memory-mapped from a file (an
uncompressed IDX file, a uint8 ``.npy``, or the cache an image folder is decoded into once, see
:mod:`genlab.data.images`), and reads as the float32 tensor ``x / 127.5 - 1`` in ``[-1, 1]`` it
stands for. A split is a list of row numbers into the same rows, so splitting, ``n=`` and shuffling
copy nothing; the trainer gathers the uint8 rows of each batch, moves them to its device as uint8
and decodes them there (:meth:`Uint8Images.batch`). A 200,000-image 32x32 RGB folder is 614 MB of
bytes on disk, not 2.5 GB of float32 in memory, and only the rows a batch touches are read.

Everything else may treat a :class:`Uint8Images` as the float tensor: ``len`` and ``.shape``
read no image; indexing (an integer, a slice, indices, a mask) decodes only the rows it selects;
any other tensor method (``.to``, ``.numpy``, ``.mean``, ...), a ``torch`` function
(``torch.cat``, ...) or an arithmetic operator decodes all of them into a new float32 tensor.
:meth:`Uint8Images.subset` is the lazy selection (the loaders split with it). Decoding is exactly the
arithmetic of the in-memory loaders (``float32(x) / 127.5 - 1``), so every figure is unchanged.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch


def decode(u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` -> ``dtype`` in ``[-1, 1]`` (``x / 127.5 - 1``, on ``u8``'s device)."""
    return u8.to(dtype) / 127.5 - 1


class Uint8Images:
    """``(N, C, H, W)`` images held as uint8 that read as their float32 values in ``[-1, 1]``.

    ``rows``: uint8 ``(M, C, H, W)`` (a view; it may be a channels-last file mapped into memory);
    ``index``: int64 ``(N,)`` the rows, in order, that this set holds (None: all ``M``)."""

    __slots__ = ("rows", "index")

    def __init__(self, rows: torch.Tensor, index: torch.Tensor | None = None) -> None:
        if rows.dtype != torch.uint8 or rows.dim() != 4:
            raise TypeError(f"Uint8Images needs uint8 (M, C, H, W) rows, got {rows.dtype} "
                            f"{tuple(rows.shape)}")  # fmt: skip
        self.rows = rows
        self.index = None if index is None else torch.as_tensor(index, dtype=torch.int64)

    # -- the lazy part ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows) if self.index is None else len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.rows.shape[1:]))

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.rows.device

    @property
    def ndim(self) -> int:
        return 4

    def dim(self) -> int:
        return 4

    def numel(self) -> int:
        return self.shape.numel()

    def positions(self) -> torch.Tensor:
        """The row numbers this set holds, int64 ``(N,)``."""
        return torch.arange(len(self.rows)) if self.index is None else self.index

    def subset(self, which: Any) -> Uint8Images:
        """The images at ``which`` (a slice, or indices / a boolean mask into this set), lazily."""
        return Uint8Images(self.rows, self.positions()[which])

    def uint8(self, which: torch.Tensor | None = None) -> torch.Tensor:
        """The uint8 ``(B, C, H, W)`` images at ``which`` (positions in this set; None: all), a
        contiguous copy gathered from the rows."""
        if which is None and self.index is None:
            return self.rows.contiguous()
        ids = self.positions() if which is None else self.positions()[which.to("cpu")]
        return torch.index_select(self.rows, 0, ids.to(self.rows.device)).contiguous()

    def batch(self, which: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """The float32 images at positions ``which``, gathered as uint8, moved to ``device`` as
        uint8 (from pinned memory when it is a GPU) and decoded there."""
        u8 = self.uint8(which)
        device = torch.device(device)
        if device.type == "cuda" and u8.device.type == "cpu":
            u8 = u8.pin_memory().to(device, non_blocking=True)
        return decode(u8.to(device))

    def to_device_uint8(self, device: torch.device | str) -> Uint8Images:
        """The same images with their uint8 rows copied to ``device`` (only the rows held)."""
        return Uint8Images(self.uint8().to(device))

    def __getitem__(self, key: Any) -> torch.Tensor:
        """As a float32 tensor's indexing, decoding only the rows asked for (use
        :meth:`subset` to keep a selection lazy)."""
        if isinstance(key, (int, np.integer)):
            i = operator.index(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for {len(self)} images")
            return decode(self.uint8(torch.tensor([i % len(self)])))[0]
        if isinstance(key, slice):
            return decode(self.uint8(torch.arange(len(self))[key]))
        if isinstance(key, (torch.Tensor, np.ndarray, list)) and np.ndim(key) == 1:
            sel = torch.as_tensor(key)
            if sel.dtype == torch.bool:
                sel = sel.nonzero().squeeze(1)
            return decode(self.uint8(sel.to(torch.int64)))
        return self.float()[key]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- everything else: the decoded float32 tensor ------------------------------------------

    def float(self) -> torch.Tensor:
        """All the images decoded: float32 ``(N, C, H, W)`` in ``[-1, 1]`` (a new tensor)."""
        return decode(self.uint8())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.float().numpy()
        return out if dtype is None else out.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        def plain(a: Any) -> Any:
            if isinstance(a, Uint8Images):
                return a.float()
            if isinstance(a, (list, tuple)):
                return type(a)(plain(b) for b in a)
            return a

        return func(*plain(tuple(args)), **{k: plain(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.float(), name)

    def __repr__(self) -> str:
        return f"Uint8Images({tuple(self.shape)}, held as uint8, reads as float32 in [-1, 1])"


def _binary(name: str):
    def op(self: Uint8Images, other: Any) -> Any:
        return getattr(self.float(), name)(
            other.float() if isinstance(other, Uint8Images) else other
        )

    op.__name__ = name
    return op


for _name in (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__pow__", "__matmul__", "__lt__", "__le__", "__gt__", "__ge__",
):  # fmt: skip
    setattr(Uint8Images, _name, _binary(_name))
Uint8Images.__neg__ = lambda self: -self.float()  # type: ignore[attr-defined]


def uint8_rows(arr: np.ndarray) -> torch.Tensor:
    """A uint8 numpy array as a torch tensor sharing its memory (a writable file map, opened
    copy-on-write, stays a file map); a read-only array is copied once."""
    return torch.from_numpy(arr if arr.flags.writeable else np.array(arr))
