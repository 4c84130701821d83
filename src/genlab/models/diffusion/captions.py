"""Captions made from labels, and their tokens: text conditioning at our scale.

Stable Diffusion conditions its U-Net on the token sequence of a text encoder through
cross-attention (Rombach et al. 2022, sec. 3.3). genlab has no captioned data and downloads
nothing, so it writes captions itself from what the data has: the class label and a measured
attribute of the image. The attribute is stroke weight: an image's ink (its mean intensity,
mapped to [0, 1]) against the terciles of its class's ink on the training data, giving "thin",
no word, or "bold". The templates vary the wording ("a thin seven", "the digit 3, bold", "7",
"a picture of a heavy nine"; "the digit" and "the number" for digit names only), so the text encoder (:class:`genlab.nets.transformer.Transformer`,
trained jointly with the U-Net) has to read the words, not a fixed slot.

Tokens are characters of a fixed alphabet (:data:`ALPHABET`, lower case) padded with id 0 to
:data:`LENGTH`. The all-padding caption is the null condition of classifier-free guidance (as an
empty prompt is in Stable Diffusion).

Class names are the data's (``meta["classes"]``, the folder names of an image folder) or the label
numbers; a single-digit name is also written as its word ("7" or "seven").
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import ConfigError

ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789,.'-"
PAD = 0  # the null caption is all PAD
VOCAB = len(ALPHABET) + 1
LENGTH = 48  # characters in a caption (longer prompts are refused)
NAME_LENGTH = 24  # characters of a class name kept

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
THIN = ["thin", "light", "skinny"]
BOLD = ["bold", "thick", "heavy"]
PLAIN = ["{name}", "a {name}", "a picture of a {name}"]
WITH_ADJ = ["a {adj} {name}", "{adj} {name}", "a {name}, {adj}", "a picture of a {adj} {name}"]
DIGIT_PLAIN = [*PLAIN, "the digit {name}", "the number {name}"]  # digit names ("7") also get these
DIGIT_WITH_ADJ = [*WITH_ADJ, "the digit {name}, {adj}"]
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}


def tokenize(text: str, what: str = "the prompt") -> torch.Tensor:
    """``text`` -> ``(LENGTH,)`` int64 token ids, padded; unknown characters or a text longer than
    :data:`LENGTH` are refused with the reason."""
    text = " ".join(text.lower().split())
    bad = sorted({ch for ch in text if ch not in _INDEX})
    if bad:
        raise ConfigError(
            f"{what} {text!r} has characters the caption alphabet lacks: {''.join(bad)!r} "
            f"(allowed: letters, digits, space and {ALPHABET[37:]!r})"
        )
    if len(text) > LENGTH:
        raise ConfigError(f"{what} has {len(text)} characters; captions hold at most {LENGTH}")
    out = torch.full((LENGTH,), PAD, dtype=torch.long)
    out[: len(text)] = torch.tensor([_INDEX[ch] for ch in text], dtype=torch.long)
    return out


def detokenize(tokens: torch.Tensor) -> str:
    return "".join(ALPHABET[i - 1] for i in tokens.tolist() if i != PAD)


def ink(x: torch.Tensor) -> torch.Tensor:
    """The mean intensity of each image ``(B, C, H, W)`` in [-1, 1], mapped to [0, 1]: ``(B,)``."""
    return (x.flatten(1).float().mean(1) + 1) / 2


class Captioner(nn.Module):
    """Captions for labelled images, as token ids. Buffers (saved with the model): the class names
    as tokens ``(K, NAME_LENGTH)`` and the terciles of each class's ink ``(K, 2)``, measured on the
    training data by :meth:`fit`."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        names = torch.full((num_classes, NAME_LENGTH), PAD, dtype=torch.long)
        for k in range(num_classes):
            names[k, : len(str(k))] = tokenize(str(k))[: len(str(k))]
        self.register_buffer("names", names)
        self.register_buffer("terciles", torch.tensor([[0.0, 1.0]]).repeat(num_classes, 1))
        # every caption a class can get, as tokens (see _build_table): built from the names on the
        # host whenever they change, so that writing a batch's captions reads nothing back
        self.register_buffer("table", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("spellable", torch.empty(0, dtype=torch.bool), persistent=False)
        self.register_buffer("digit_name", torch.empty(0, dtype=torch.bool), persistent=False)
        self.register_buffer("n_templates", torch.empty(0, dtype=torch.long), persistent=False)
        self._build_table()
        self.register_load_state_dict_post_hook(lambda module, _: module._build_table())

    def fit(self, x: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None) -> None:
        """Measure each class's ink terciles on training images ``x`` with ``labels``; keep the
        class names (``classes``: the data's, else the label numbers)."""
        for k, name in enumerate(classes or []):
            clean = " ".join("".join(ch for ch in name.lower() if ch in _INDEX).split())
            clean = (clean or str(k))[:NAME_LENGTH]
            self.names[k] = PAD
            self.names[k, : len(clean)] = tokenize(clean)[: len(clean)]
        values = ink(x)
        for k in range(self.num_classes):
            v = values[labels.cpu() == k].double()
            if len(v) >= 3:
                q = torch.quantile(v, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
                self.terciles[k] = q.to(self.terciles.dtype)
        self._build_table()

    def _build_table(self) -> None:
        """``table[k, s, a, t]`` ``(K, 2, 7, T, LENGTH)``: the tokens of class ``k``'s caption with
        spelling ``s`` (1: the word of a single-digit name), stroke word ``a`` (0: none, 1-3: thin,
        4-6: bold) and template ``t``, exactly as :meth:`captions` writes it; ``n_templates[d, a>0]``
        the templates a digit name (``d`` = 1) or another has; ``digit_name[k]`` whether class
        ``k``'s name is a number, ``spellable[k]`` whether it is a single digit. Unused cells are
        padding."""
        device = self.names.device
        lists = [[PLAIN, WITH_ADJ], [DIGIT_PLAIN, DIGIT_WITH_ADJ]]
        width = max(len(t) for pair in lists for t in pair)
        table = torch.full((self.num_classes, 2, 7, width, LENGTH), PAD, dtype=torch.long)
        spellable = torch.zeros(self.num_classes, dtype=torch.bool)
        digit_name = torch.zeros(self.num_classes, dtype=torch.bool)
        for k in range(self.num_classes):
            name = self.name(k)
            single = name.isdigit() and len(name) == 1
            spellable[k], digit_name[k] = single, name.isdigit()
            spellings = [name, WORDS[int(name)] if single else name]
            templates = lists[int(name.isdigit())]
            for s, spelled in enumerate(spellings):
                for a, adj in enumerate([None, *THIN, *BOLD]):
                    for t, template in enumerate(templates[adj is not None]):
                        text = template.format(name=spelled, adj=adj)
                        table[k, s, a, t] = tokenize(text, "a caption")
        counts = [[len(t) for t in pair] for pair in lists]
        self.table = table.to(device)
        self.spellable = spellable.to(device)
        self.digit_name = digit_name.to(device)
        self.n_templates = torch.tensor(counts, dtype=torch.long, device=device)

    def name(self, k: int) -> str:
        return detokenize(self.names[k])

    def _spell(self, k: int, u: float) -> str:
        name = self.name(k)
        return WORDS[int(name)] if name.isdigit() and len(name) == 1 and u < 0.5 else name

    def captions(
        self,
        labels: torch.Tensor,
        x: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """A caption for each label: a random template and spelling (from ``generator``), with the
        stroke-weight word of image ``x`` when given and not in the middle tercile."""
        device = generator.device if generator is not None else "cpu"
        u = torch.rand((len(labels), 4), generator=generator, device=device).cpu().tolist()
        weights = None if x is None else ink(x).cpu()
        out = []
        for i, k in enumerate(labels.cpu().tolist()):
            name, adj = self._spell(k, u[i][0]), None
            if weights is not None:
                lo, hi = self.terciles[k].tolist()
                w = float(weights[i])
                pick = min(int(u[i][1] * 3), 2)
                adj = THIN[pick] if w < lo else BOLD[pick] if w > hi else None
            digit = self.name(k).isdigit()
            templates = (DIGIT_WITH_ADJ if digit else WITH_ADJ) if adj else (
                DIGIT_PLAIN if digit else PLAIN)  # fmt: skip
            out.append(templates[min(int(u[i][2] * len(templates)), len(templates) - 1)].format(
                name=name, adj=adj))  # fmt: skip
        return out

    def tokens(
        self,
        labels: torch.Tensor,
        x: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`captions` as token ids ``(B, LENGTH)`` on the labels' device, the same draws
        looked up in :meth:`_build_table`'s table on the device: nothing is read back to the host,
        so a training step never waits for it (the choices are made in float64, as the host's
        Python floats make them in :meth:`captions`)."""
        device = generator.device if generator is not None else "cpu"
        u = torch.rand((len(labels), 4), generator=generator, device=device)
        u = u.to(self.table.device, torch.float64)
        k = labels.to(self.table.device)
        spell = (self.spellable[k] & (u[:, 0] < 0.5)).long()
        adj = torch.zeros_like(k)
        if x is not None:
            w = ink(x).to(self.table.device)
            lo, hi = self.terciles[k].unbind(-1)
            pick = (u[:, 1] * 3).floor().long().clamp(max=2)
            adj = torch.where(w < lo, 1 + pick, torch.where(w > hi, 4 + pick, adj))
        n = self.n_templates[self.digit_name[k].long(), (adj > 0).long()]
        t = torch.minimum((u[:, 2] * n).floor().long(), n - 1)
        return self.table[k, spell, adj, t].to(labels.device)


__all__ = ["ALPHABET", "LENGTH", "PAD", "VOCAB", "Captioner", "detokenize", "ink", "tokenize"]
