"""Step counters and flags that live in a module's buffers (so checkpoints keep them) but that
the module reads on the host every step, e.g. "is the discriminator on yet?" or "is the codebook
initialised?". Reading a buffer on a GPU waits for every kernel queued before it; a
:class:`HostCopy` reads it once (after construction or a state-dict load) and then keeps a Python
copy in step with every change made through :meth:`HostCopy.set`, so a training step reads no
device value (``tests/test_host_syncs.py``)."""

from __future__ import annotations

import torch


class HostCopy:
    """Python copies of some integer/bool buffers of ``module``, forgotten when a state dict is
    loaded into it (the next :meth:`get` reads the buffer again)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.values: dict[str, int] = {}
        module.register_load_state_dict_post_hook(self._forget)

    def _forget(self, module: torch.nn.Module, incompatible: object) -> None:
        self.values.clear()

    def get(self, module: torch.nn.Module, name: str) -> int:
        """The buffer's value (read from the device the first time only)."""
        value = self.values.get(name)
        if value is None:
            value = self.values[name] = int(getattr(module, name))
        return value

    def set(self, module: torch.nn.Module, name: str, value: int) -> None:
        """Write ``value`` to the buffer (an asynchronous fill) and to the copy."""
        getattr(module, name).fill_(value)
        self.values[name] = int(value)

    def add(self, module: torch.nn.Module, name: str, step: int = 1) -> None:
        self.set(module, name, self.get(module, name) + step)
