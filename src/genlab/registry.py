"""Registries: one place that lists what exists (``genlab list``) and suggests close names on a typo."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from genlab.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str
    meta: dict[str, Any] = field(default_factory=dict)  # what a kind of entry declares (samplers:
    # ``ode``, ``noise_options``)


class Registry(Generic[T]):
    """A named collection of constructors (classes or functions).

    >>> SAMPLERS = Registry("sampler")
    >>> @SAMPLERS.register("euler", help="fixed-step Euler")
    ... def euler(...): ...
    >>> SAMPLERS.get("eulr")  # UnknownNameError: unknown sampler 'eulr'; did you mean 'euler'?
    """

    def __init__(self, kind: str, on_register: Callable[[str, Any], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._on_register = on_register  # what registering does to the object besides listing it

    def register(self, name: str, obj: T | None = None, *, help: str = "", **meta: Any) -> Any:
        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = help or (getattr(o, "__doc__", None) or "").strip().split("\n")[0]
            if self._on_register is not None:
                self._on_register(name, o)
            self._entries[name] = Entry(name, o, doc, dict(meta))
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """The whole record of ``name`` (object, help line and metadata)."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if close:
            msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        return msg + f" (known: {', '.join(sorted(self._entries))})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def in_order(self) -> list[Entry[T]]:
        """The entries in the order they were registered (iteration sorts them by name)."""
        return list(self._entries.values())

    def names(self) -> list[str]:
        return sorted(self._entries)


DATASETS: Registry[Callable[..., Any]] = Registry("dataset")


def _name_family(name: str, cls: Any) -> None:
    """A family's name is written once, where it is registered: the class gets it as ``family``."""
    if "family" in vars(cls):
        raise ValueError(
            f"{cls.__name__} sets family = {vars(cls)['family']!r}; the name it is registered "
            f"under ({name!r}) is its family"
        )
    cls.family = name


MODELS: Registry[Callable[..., Any]] = Registry("model", on_register=_name_family)
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
#: samplers of the discrete-diffusion text families (meta ``families``: the families that take them)
TEXT_SAMPLERS: Registry[Any] = Registry("text sampler")
METRICS: Registry[Callable[..., Any]] = Registry("metric")
NETS: Registry[Callable[..., Any]] = Registry("backbone")
PROCESSES: Registry[Callable[..., Any]] = Registry("process")  # diffusion noise processes

ALL = {
    "datasets": DATASETS,
    "models": MODELS,
    "samplers": SAMPLERS,
    "text samplers": TEXT_SAMPLERS,
    "processes": PROCESSES,
    "metrics": METRICS,
    "backbones": NETS,
}
