"""Feature networks for image metrics: small CNNs that genlab trains on the data itself and caches.

Fréchet distance (Heusel et al., 2017), KID (Bińkowski et al., 2018), precision/recall
(Kynkäänniemi et al., 2019), density/coverage (Naeem et al., 2020) and a classifier score compare
*features* of images, not pixels. The usual feature network, Inception-v3 trained on ImageNet, is
downloaded, large, slow on a CPU and built for 299x299 photographs; genlab never downloads weights.
Instead, for each image set it trains a small network of its own on that set (a fixed recipe,
seconds to a couple of minutes on a CPU) and caches it, keyed by a hash of the data's content and a
hash of the recipe. The metrics then use its 128-d penultimate embedding.

**The network** (:class:`FeatureNet`, chosen from the image shape ``(C, H, W)`` alone): 3x3
convolutions with ReLU, each halving the height and width (an axis already at 4 or less keeps its
size) until the map is at most 4x4, with at least three convolutions in all; widths 24, 48, 96, then
128. The map is flattened and a linear layer gives the 128-d embedding (the features); a classifier
adds ReLU and a linear head over the classes. Training uses batch normalization after each
convolution; it is folded into the convolutions afterwards, so the stored network is plain
convolutions, cheap to run over tens of thousands of images (timings: ``docs/metrics.md``). For MNIST the layers are 24@14x14, 48@7x7, 96@4x4.

**Labelled data** (every example has a class, at least two classes): a classifier, trained by
cross-entropy; held-out accuracy is reported and the classifier score (``probs``) is available.

**Unlabelled data** (e.g. a PNG folder without class sub-folders): the same encoder trained as an
autoencoder (a mirrored decoder of transposed convolutions, mean squared error); the encoder's 128-d
code is the feature vector, held-out reconstruction error is reported, and there is no classifier
score (``kind == "autoencoder"``, ``has_classes`` is False). Why an autoencoder and not random
features: randomly initialised CNNs are a reasonable embedding for data far from ImageNet (Naeem et
al., 2020, recommend a randomly initialised VGG-16 there), but what a *small* random network keeps
in 128 numbers is unknown and cannot be checked. An autoencoder is trained to keep what is needed to
redraw the image from its 128-d code (Hinton & Salakhutdinov, 2006, "Reducing the dimensionality of
data with neural networks", Science 313), and its held-out reconstruction error, printed beside the
mean-image baseline, says how much it keeps. It also avoids a known weakness of class-trained
features, that they attend to what predicts the labels: FID can be lowered by matching the histogram
of predicted classes without better images (Kynkäänniemi et al., 2023, "The Role of ImageNet Classes
in Fréchet Inception Distance", ICLR). Its own bias: pixel MSE weighs large, low-frequency structure
most, so fine texture counts less than it would to a human. It shares the trunk, recipe, hashing and
cache with the classifier, so both paths are one code path.

**The recipe** (:class:`Recipe`, fixed; its hash is part of the cache key, so a changed recipe never
reuses an old net): examples sorted by content digest (so the net is a function of the content set,
not of file order or of the data's train/validation split), 20% held out (at most 10,000) by a
seeded permutation of that order, AdamW (lr 3e-3, weight decay 0.05), batch 128, 15 epochs clamped
to 600..3,000 steps, 5% linear warm-up then cosine decay, random translations of
``±max(1, round(min(H, W) / 14))`` pixels (±2 on 28x28, ±1 on 8x8) with edge padding. 20% held out
because the held-out accuracy is the network's only quality check: on 10,000 MNIST images it
gives 2,000 held-out images (standard error about 0.3 points at 98%), on the 1,797 digits 359.
All randomness comes from seeded generators, so training is deterministic for a given content set,
recipe, torch build and device (bit-exactness across machines or thread counts is not promised).

**The cache**: ``$GENLAB_CACHE/features`` (default ``~/.cache/genlab/features``), one folder per
(data hash, recipe hash) holding ``network.safetensors`` (weights; never pickle) and
``network.json`` (data hash, recipe and its hash, shape, classes, kind, held-out figures, training
seconds, torch version, size and sha256 of the weights). Both are written to a temporary folder
and renamed into place, the JSON after the weights, so an entry whose JSON exists is complete.
Loading checks the data hash and the weights' size and sha256. A corrupt entry is an error, never
retrained silently: reports cite the network by its id (the first 12 hex digits of the weights'
sha256), and a retrained net need not be bit-identical, so replacing it is left to the user (the
message names the folder to delete). The one case retrained automatically is a folder without its
JSON: by the write order that entry was never complete, so no report can have used it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from genlab.data.base import Dataset
from genlab.errors import CheckpointError, DataError
from genlab.io import atomic_write_bytes, cache_root, load_state_dict_checked
from genlab.nets.features import (
    FeatureNet,
    _check_shape,
    _Decoder,
)

ARCH = "genlab-convnet-1"  # bump when the networks or the training code change (recipe hash)
FORMAT = "genlab-feature-network"
FORMAT_VERSION = 1
WEIGHTS = "network.safetensors"
SIDECAR = "network.json"
HASH_FORMAT = "genlab-image-content-1"  # bump when the content hash changes
MIN_EXAMPLES = 10  # batch normalization needs batches of several images


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How a feature network is trained. Every field enters :attr:`hash`, so a network trained
    with other settings (a quicker test variant, say) is never taken for the real one.

    Steps: ``epochs`` passes over the training part, clamped to ``[min_steps, max_steps]``.
    Translations: ``±max(1, round(min(H, W) / shift_divisor))`` pixels (0 disables).
    """

    arch: str = ARCH
    seed: int = 0
    heldout_fraction: float = 0.2
    heldout_max: int = 10_000
    batch_size: int = 128
    epochs: float = 15.0
    min_steps: int = 600
    max_steps: int = 3_000
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    shift_divisor: int = 14

    def __post_init__(self) -> None:  # 15 and 15.0 must hash alike: coerce to the field types
        for f in fields(self):
            kind = {"int": int, "float": float, "str": str}[f.type]
            object.__setattr__(self, f.name, kind(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        """sha256 (hex) of the recipe's canonical JSON."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def steps(self, n_train: int) -> int:
        """Optimizer steps for ``n_train`` training examples."""
        s = round(self.epochs * n_train / self.batch_size)
        return int(min(max(s, self.min_steps), self.max_steps))

    def shift(self, shape: tuple[int, ...]) -> int:
        """Largest random translation in pixels for images of ``shape``."""
        if self.shift_divisor <= 0:
            return 0
        return max(1, round(min(shape[1:]) / self.shift_divisor))

    def heldout(self, n: int) -> int:
        """Number of held-out examples out of ``n``."""
        k = min(int(round(n * self.heldout_fraction)), self.heldout_max)
        return max(k, 1) if self.heldout_fraction > 0 and n > 1 else k

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECIPE = Recipe()


# ---------------------------------------------------------------------------------------------
# Content hash
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFingerprint:
    """What identifies an image set's content, independent of order and train/validation split.

    ``hash``: sha256 (hex) of a header (hash format, example shape, whether there are labels,
    number of classes) followed by the sorted per-example digests; each digest is the sha256 of
    the example's float32 values (little-endian, ``-0.0`` read as ``0.0``) and its int64 label.
    ``class_counts``: examples per class (None without labels), for messages.
    """

    hash: str
    shape: tuple[int, ...]
    examples: int
    num_classes: int | None
    class_counts: tuple[int, ...] | None

    @property
    def short(self) -> str:
        return self.hash[:12]

    def difference(self, there: DataFingerprint) -> str:
        """What differs between this data and ``there`` (a network's data), in words: shape,
        number of examples, classes, else values."""
        diffs = []
        if self.shape != there.shape:
            diffs.append(f"image shape {self.shape} here, {there.shape} in its data")
        if self.examples != there.examples:
            diffs.append(f"{self.examples} examples here, {there.examples} in its data")
        if self.num_classes != there.num_classes:
            diffs.append(
                f"{_classes(self.num_classes)} here, {_classes(there.num_classes)} in its data"
            )
        elif self.class_counts != there.class_counts:
            diffs.append("the number of examples per class differs")
        if not diffs:
            diffs.append("same shape, size and class counts, so pixel values or labels differ")
        return "; ".join(diffs)


def _classes(k: int | None) -> str:
    return "no labels" if not k else f"{k} classes"


def _images_and_labels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """Train and validation parts together (the content; never the test part) with labels and
    number of classes."""
    if dataset.kind != "images":
        raise DataError(
            f"feature networks are for image data; {dataset.name!r} holds {dataset.kind}"
        )
    x = torch.cat([dataset.train, dataset.val]) if len(dataset.val) else dataset.train
    _check_shape(tuple(x.shape[1:]))
    has_train, has_val = dataset.labels_train is not None, dataset.labels_val is not None
    if has_train != has_val and len(dataset.val):
        raise DataError(
            f"dataset {dataset.name!r} has labels for only one of its train/validation parts"
        )
    y, k = None, None
    if has_train:
        parts = [dataset.labels_train] + ([dataset.labels_val] if len(dataset.val) else [])
        y = torch.cat([p.reshape(-1) for p in parts]).to(torch.int64)
        if len(y) != len(x):
            raise DataError(f"dataset {dataset.name!r} has {len(x)} images but {len(y)} labels")
        k = dataset.num_classes if dataset.num_classes is not None else int(y.max()) + 1
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            raise DataError(
                f"dataset {dataset.name!r}: labels must be in 0..{k - 1}, "
                f"found {int(y.min())}..{int(y.max())}"
            )
    return x, y, k


def _digests(x: torch.Tensor, y: torch.Tensor | None, chunk: int = 4096) -> list[bytes]:
    """sha256 of each example's float32 bytes followed by its int64 label (if any)."""
    out: list[bytes] = []
    labels = None if y is None else y.to("cpu", torch.int64).numpy().astype("<i8")
    for i in range(0, len(x), chunk):
        block = (
            x[i : i + chunk].detach().to("cpu", torch.float32).reshape(len(x[i : i + chunk]), -1)
        )
        rows = (block + 0.0).numpy().astype("<f4", copy=False)  # + 0.0 turns -0.0 into 0.0
        for j, row in enumerate(rows):
            h = hashlib.sha256(row.tobytes())
            if labels is not None:
                h.update(labels[i + j].tobytes())
            out.append(h.digest())
    return out


def _fingerprint(
    x: torch.Tensor, y: torch.Tensor | None, num_classes: int | None
) -> tuple[DataFingerprint, list[int]]:
    """The fingerprint and the canonical order (indices sorted by example digest)."""
    digests = _digests(x, y)
    order = sorted(range(len(digests)), key=digests.__getitem__)
    shape = tuple(int(s) for s in x.shape[1:])
    header = {
        "format": HASH_FORMAT,
        "shape": list(shape),
        "labels": y is not None,
        "num_classes": num_classes,
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for i in order:
        h.update(digests[i])
    counts = None
    if y is not None:
        counts = tuple(int(c) for c in torch.bincount(y.cpu(), minlength=num_classes or 0))
    fp = DataFingerprint(h.hexdigest(), shape, len(x), num_classes, counts)
    return fp, order


def fingerprint(dataset: Dataset) -> DataFingerprint:
    """The content fingerprint of an image :class:`Dataset`: its train and validation parts
    together (never the test part, which the feature network must not see); the same images and
    labels give the same hash in any order and however they are split between those two."""
    return _fingerprint(*_images_and_labels(dataset))[0]


def content_hash(dataset: Dataset) -> str:
    """sha256 (hex) of the dataset's content; see :class:`DataFingerprint`."""
    return fingerprint(dataset).hash


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureInfo:
    """What is known about a feature network (the contents of its ``network.json``).

    ``hash`` (a property) is the short id reports cite: the first 12 hex digits of the weights'
    sha256. ``heldout_accuracy`` (classifiers, in [0, 1]) or ``heldout_mse`` (autoencoders, mean
    squared error per value in [-1, 1] units, with ``baseline_mse``: that of the mean training
    image) are None without held-out examples. ``path`` is the entry's folder (None if unsaved).
    """

    kind: str
    data_hash: str
    recipe: dict[str, Any]
    recipe_hash: str
    shape: tuple[int, ...]
    examples: int
    num_classes: int | None
    class_counts: tuple[int, ...] | None
    train_examples: int
    heldout_examples: int
    heldout_accuracy: float | None
    heldout_mse: float | None
    baseline_mse: float | None
    steps: int
    train_seconds: float
    torch_version: str
    weights_sha256: str
    weights_size: int
    data_name: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def hash(self) -> str:
        return self.weights_sha256[:12]

    @property
    def has_classes(self) -> bool:
        return self.kind == "classifier"

    @property
    def fingerprint(self) -> DataFingerprint:
        return DataFingerprint(
            self.data_hash, self.shape, self.examples, self.num_classes, self.class_counts
        )

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        d["shape"] = list(self.shape)
        d["class_counts"] = None if self.class_counts is None else list(self.class_counts)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any], path: Path | None) -> FeatureInfo:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "path"}
        kw["shape"] = tuple(kw["shape"])
        if kw.get("class_counts") is not None:
            kw["class_counts"] = tuple(kw["class_counts"])
        return cls(**kw, path=path)


def _translate(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Each image moved by its own random integer offset in ``[-shift, shift]`` on both axes
    (edges repeated); ``x`` ``(B, C, H, W)``."""
    if shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def _schedule(step: int, total: int, warmup: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup * total`` steps, then cosine to 0."""
    w = max(1, int(round(warmup * total)))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


def train_feature_network(
    dataset: Dataset,
    *,
    recipe: Recipe = RECIPE,
    device: torch.device | str | None = None,
    verbose: bool = False,
) -> tuple[FeatureNet, FeatureInfo, bytes]:
    """Train a feature network on ``dataset`` (train and validation parts together) with
    ``recipe``; return the network (folded, eval mode, on ``device``, default CPU), its info
    (``path`` None) and the safetensors bytes of its weights. Does not touch the cache."""
    x, y, k = _images_and_labels(dataset)
    fp, order = _fingerprint(x, y, k)
    return _train(x, y, k, fp, order, recipe, device, verbose, dataset.name)


def _train(
    x: torch.Tensor,
    y: torch.Tensor | None,
    k: int | None,
    fp: DataFingerprint,
    order: list[int],
    recipe: Recipe,
    device: torch.device | str | None,
    verbose: bool,
    name: str,
) -> tuple[FeatureNet, FeatureInfo, bytes]:
    if len(x) < MIN_EXAMPLES:
        raise DataError(
            f"a feature network needs at least {MIN_EXAMPLES} images to train on; "
            f"{name or 'the data'} has {len(x)}"
        )
    device = torch.device(device or "cpu")
    classes = y is not None and k is not None and k >= 2
    idx = torch.tensor(order, dtype=torch.int64)
    x = x[idx].to(device, torch.float32)  # canonical order: the net depends on the content only
    y = y[idx].to(device) if classes else None
    n = len(x)
    n_held = recipe.heldout(n)
    g = torch.Generator().manual_seed(recipe.seed)
    perm = torch.randperm(n, generator=g).to(device)
    held, tr = perm[:n_held], perm[n_held:]
    steps = recipe.steps(len(tr))
    shift = recipe.shift(fp.shape)
    kind = "classifier" if classes else "autoencoder"
    if verbose:
        what = f"classifier, {k} classes" if classes else "autoencoder, no labels"
        print(
            f"training the feature network for {name or 'the data'} ({what}; {len(tr):,} images, "
            f"{n_held:,} held out; {steps} steps)",
            file=sys.stderr,
            flush=True,
        )
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = FeatureNet(fp.shape, k if classes else None, norm=True).to(device)
        decoder = None if classes else _Decoder(fp.shape, x[tr].mean(0)).to(device)
    params = list(net.parameters()) + ([] if decoder is None else list(decoder.parameters()))
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, recipe.warmup))
    net.train()
    if decoder is not None:
        decoder.train()
    pos, epoch_perm = len(tr), tr
    bs = min(recipe.batch_size, len(tr))
    for _ in range(steps):
        if pos + bs > len(tr):  # a new epoch: drop the ragged end, reshuffle
            epoch_perm, pos = tr[torch.randperm(len(tr), generator=g).to(device)], 0
        batch = epoch_perm[pos : pos + bs]
        pos += bs
        xb = _translate(x[batch], shift, g)
        emb = net(xb)
        if decoder is None:
            loss = F.cross_entropy(net.classify(emb), y[batch])
        else:
            loss = F.mse_loss(decoder(emb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    out = net.eval().folded()
    acc = mse = base = None
    if n_held:
        with torch.no_grad():
            if classes:
                acc = float((out.logits(x[held]).argmax(1) == y[held]).double().mean())
            else:
                decoder.eval()
                rec = torch.cat([decoder(out(x[b])) for b in held.split(1024)])
                mse = float(F.mse_loss(rec.double(), x[held].double()))
                mean = x[tr].double().mean(0, keepdim=True)
                base = float(((x[held].double() - mean) ** 2).mean())
    blob = save_safetensors(
        {k_: v.detach().cpu().contiguous() for k_, v in out.state_dict().items()}
    )
    info = FeatureInfo(
        kind=kind,
        data_hash=fp.hash,
        recipe=recipe.to_dict(),
        recipe_hash=recipe.hash,
        shape=fp.shape,
        examples=fp.examples,
        num_classes=k,
        class_counts=fp.class_counts,
        train_examples=len(tr),
        heldout_examples=n_held,
        heldout_accuracy=acc,
        heldout_mse=mse,
        baseline_mse=base,
        steps=steps,
        train_seconds=round(seconds, 2),
        torch_version=torch.__version__,
        weights_sha256=hashlib.sha256(blob).hexdigest(),
        weights_size=len(blob),
        data_name=name,
    )
    return _for_inference(out, device), info, blob


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$GENLAB_CACHE/features``, else ``~/.cache/genlab/features``."""
    return cache_root() / "features"


def entry_name(data_hash: str, recipe_hash: str) -> str:
    """Folder name of a cache entry: 20 hex digits of the data hash, 12 of the recipe hash."""
    return f"{data_hash[:20]}-{recipe_hash[:12]}"


def feature_network(
    dataset: Dataset,
    *,
    cache_dir: str | Path | None = None,
    train_if_missing: bool = True,
    verbose: bool = True,
    recipe: Recipe = RECIPE,
    device: torch.device | str | None = None,
) -> tuple[FeatureNet, FeatureInfo]:
    """The feature network of an image dataset: loaded from the cache when an entry for its
    content (train and validation parts together) and ``recipe`` exists, else trained (on
    ``device``, default CPU) and cached. Returns the network (eval mode, on ``device``) and its
    :class:`FeatureInfo`; with ``verbose``, training prints a line before and :func:`describe`
    after (to stderr).

    Held-out accuracy and training time on digits and MNIST: ``docs/metrics.md``, from
    ``bench/eval_images.py``. (With 2 threads on a busy machine, set ``OMP_WAIT_POLICY=PASSIVE``:
    spinning OpenMP threads slow the training down many times.)

    Raises :class:`CheckpointError` when the entry is missing and ``train_if_missing`` is False,
    or when it is corrupt (the message names the folder to delete), and :class:`DataError` when
    the entry was trained on other data.
    """
    x, y, k = _images_and_labels(dataset)
    fp, order = _fingerprint(x, y, k)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / entry_name(fp.hash, recipe.hash)
    if (folder / SIDECAR).exists():
        return load_feature_network(folder, expected_hash=fp, device=device)
    if not train_if_missing:
        raise CheckpointError(
            f"no feature network for data {fp.short} (recipe {recipe.hash[:12]}) in {root}; "
            "run `genlab features` on the data to train one"
        )
    net, info, blob = _train(x, y, k, fp, order, recipe, device, verbose, dataset.name)
    _write_entry(folder, blob, info)
    net, info = load_feature_network(folder, expected_hash=fp, device=device)
    if verbose:
        print(describe(info), file=sys.stderr, flush=True)
    return net, info


def _write_entry(folder: Path, blob: bytes, info: FeatureInfo) -> None:
    """Write weights then JSON into a temporary sibling folder and rename it into place. If the
    folder appeared meanwhile (another process trained the same entry) theirs is kept; if it
    exists without its JSON (an incomplete entry, never used) the files are written into it."""
    sidecar = json.dumps(info.to_json(), indent=1).encode()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        atomic_write_bytes(tmp / WEIGHTS, blob)
        atomic_write_bytes(tmp / SIDECAR, sidecar)
        try:
            os.replace(tmp, folder)  # atomic; refused when the folder exists and is not empty
        except OSError:
            if not (folder / SIDECAR).exists():
                atomic_write_bytes(folder / WEIGHTS, blob)
                atomic_write_bytes(folder / SIDECAR, sidecar)
    except OSError as e:
        raise CheckpointError(
            f"could not write the feature network to {folder}: {e.strerror or e}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_feature_network(
    path: str | Path,
    expected_hash: str | DataFingerprint | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[FeatureNet, FeatureInfo]:
    """Load a feature network from its folder (or its ``network.json``/``network.safetensors``),
    e.g. one given by the user with ``--features PATH``. Checks the JSON, the weights' size and
    sha256 and, when ``expected_hash`` (a data hash, or a :class:`DataFingerprint` for a message
    that says what differs) is given, that the network was trained on that data."""
    path = Path(path).expanduser()
    folder = path.parent if path.name in (WEIGHTS, SIDECAR) else path
    sidecar, weights = folder / SIDECAR, folder / WEIGHTS
    if not folder.is_dir():
        raise CheckpointError(f"feature network folder {str(folder)!r} not found")
    delete = f"delete the folder {str(folder)!r} to retrain it"
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(folder)!r} is not a feature network: {SIDECAR} is missing"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{str(sidecar)!r} is unreadable or corrupt ({e}); {delete}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(sidecar)!r} does not describe a genlab feature network")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(sidecar)!r} has format version {meta.get('format_version')}, this genlab reads "
            f"{FORMAT_VERSION}; {delete}"
        )
    try:
        info = FeatureInfo.from_json(meta, folder)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(sidecar)!r} lacks or mangles field {e}; {delete}") from None
    if expected_hash is not None:
        want = expected_hash.hash if isinstance(expected_hash, DataFingerprint) else expected_hash
        if want != info.data_hash:
            what = (
                expected_hash.difference(info.fingerprint)
                if isinstance(expected_hash, DataFingerprint)
                else "only the hash of this data was given"
            )
            raise DataError(
                f"feature network {str(folder)!r} was trained on other data (hash "
                f"{info.data_hash[:12]}) than this data (hash {want[:12]}): {what}"
            )
    try:
        blob = weights.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"feature network weights {str(weights)!r} are missing; {delete}"
        ) from None
    if len(blob) != info.weights_size or hashlib.sha256(blob).hexdigest() != info.weights_sha256:
        why = (
            f"{len(blob)} bytes, {SIDECAR} says {info.weights_size}"
            if len(blob) != info.weights_size
            else f"sha256 differs from {SIDECAR}"
        )
        raise CheckpointError(
            f"feature network weights {str(weights)!r} are corrupt ({why}); {delete} (genlab does "
            f"not do it for you: reports cite this network as {info.hash})"
        )
    try:
        state = load_safetensors(blob)
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        raise CheckpointError(f"{str(weights)!r} cannot be parsed ({e}); {delete}") from None
    classes = info.kind == "classifier"
    net = FeatureNet(info.shape, info.num_classes if classes else None)
    load_state_dict_checked(net, state, f"feature network {str(folder)!r}")
    return _for_inference(net, device), info


def _for_inference(net: FeatureNet, device: torch.device | str | None) -> FeatureNet:
    """Eval mode on ``device`` (default CPU), convolution weights channels-last (faster on CPU)."""
    return net.to(torch.device(device or "cpu")).to(memory_format=torch.channels_last).eval()


def describe(info: FeatureInfo) -> str:
    """One or two lines for the terminal: id, kind, held-out figure, training time, cache path."""
    if info.kind == "classifier":
        score = (
            f"held-out accuracy {100 * info.heldout_accuracy:.1f}% "
            f"({info.heldout_examples:,} images)"
            if info.heldout_accuracy is not None
            else "no held-out images"
        )
        what = f"classifier over {info.num_classes} classes"
    else:
        if info.heldout_mse is not None:
            kept = (
                f", {100 * (1 - info.heldout_mse / info.baseline_mse):.0f}% of the variance"
                if info.baseline_mse
                else ""
            )
            score = (
                f"held-out reconstruction MSE {info.heldout_mse:.4f} (mean image "
                f"{info.baseline_mse:.4f}{kept}; {info.heldout_examples:,} images)"
            )
        else:
            score = "no held-out images"
        what = "autoencoder (no labels: no classifier score)"
    name = f" for {info.data_name}" if info.data_name else ""
    line = (
        f"feature network {info.hash}{name}: {what}, {score}, trained in "
        f"{info.train_seconds:.0f} s on {info.train_examples:,} images"
    )
    return line + (f"\n  cache: {info.path}" if info.path is not None else "")
