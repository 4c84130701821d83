"""How a second stage holds its first stage: a frozen copy of a stage-1 run inside its own model.

A stage-2 config names a trained autoencoder run, ``model.autoencoder: runs/vq``. When training
starts (:meth:`TwoStage.bind`) the stage-1 run is loaded and checked against the stage-2 data:

- it must be an autoencoder (its model's :meth:`~genlab.models.base.GenerativeModel.latent` is
  not None) with the kind of latent the family models (codes for a prior, continuous latents for
  latent diffusion);
- its examples must have the shape of the stage-2 data, and its data the same content (a hash of
  every example and label, train and validation parts together, so a different split of the
  same data is accepted and other data under the same name is not).

What it was is then recorded in the stage-2 config, ``model.stage1`` (saved in the run's
``config.yaml``): the run's path, the sha256 of the checkpoint file its weights came from, its
step, its whole resolved config and model spec, its latent and the data's name and hash. The
stage-2 model rebuilds the stage-1 architecture from that record alone, as a frozen submodule
``autoencoder`` (no gradients, always in eval mode, not a player): its weights are copied from the
stage-1 run once, when a fresh run starts (:meth:`TwoStage.initialize`), and from then on they
travel in every stage-2 checkpoint (safetensors). So a stage-2 run directory samples, evaluates
and resumes after its stage-1 directory is gone.

Nothing here looks at the stage-1 family: only at ``latent().kind``. Latent diffusion over a VQ
stage 1 models the vectors behind its codes (``LatentSpec.vectors``: the encoder's output before
quantization), and decodes by quantizing them first (Rombach et al. 2022, sec. 3.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.config import from_dict
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.feature_networks import content_hash
from genlab.io import load_state_dict_checked
from genlab.models.base import GenerativeModel, LatentSpec, ModelSpec
from genlab.registry import MODELS
from genlab.runs import load_run


def data_hash(dataset: Dataset) -> str:
    """sha256 (hex) of a dataset's content, independent of order and of the train/validation
    split: for images the content hash the feature networks are cached by
    (:func:`genlab.feature_networks.content_hash`); for other kinds the sha256 of the shape, the
    labels' presence and the sorted sha256 of each example's float32 bytes and label."""
    if dataset.kind == "images":
        return content_hash(dataset)
    x = torch.cat([dataset.train, dataset.val])
    rows = x.reshape(len(x), -1).to("cpu", torch.float32).add(0.0).numpy().astype("<f4")
    y = None
    if dataset.labels_train is not None:
        y = torch.cat([dataset.labels_train, dataset.labels_val]).to("cpu", torch.int64).numpy()
    digests = []
    for i, row in enumerate(rows):
        h = hashlib.sha256(row.tobytes())
        if y is not None:
            h.update(y[i].astype("<i8").tobytes())
        digests.append(h.digest())
    out = hashlib.sha256(f"{dataset.kind} {tuple(dataset.shape)} {y is not None}".encode())
    for d in sorted(digests):
        out.update(d)
    return out.hexdigest()


#: what :func:`stage1_record` writes and :class:`TwoStage` reads back
RECORD_KEYS = ("path", "checkpoint", "sha256", "step", "family", "latent", "data", "spec", "config")


def stage1_record(run: Any, data: Dataset) -> dict[str, Any]:
    """What a stage-2 run records of its stage-1 ``run`` (a :class:`genlab.api.Run`) trained on
    ``data``: enough to rebuild the architecture and to say where the weights came from."""
    latent = run.model.latent()
    return {
        "path": str(Path(run.dir).resolve()),
        "checkpoint": None if run.checkpoint is None else Path(run.checkpoint).name,
        "sha256": run.sha256,
        "step": int(run.step),
        "family": run.config.family,
        "latent": {"kind": latent.kind, "shape": list(latent.shape), "codes": latent.codes},
        "data": {"name": data.name, "hash": data_hash(data)},
        "spec": run.model.spec.to_dict(),
        "config": run.config.to_dict(),
    }


def _same_stage1(path: str, record: dict[str, Any]) -> bool:
    """Whether ``path`` names the recorded stage-1 run: the same directory (deleted or not), or a
    run whose checkpoint has the recorded sha256 (moved, or named from another directory)."""
    if str(Path(path).resolve()) == record["path"]:
        return True
    try:
        return load_run(path).sha256 == record["sha256"]
    except CheckpointError:
        return False


def build_stage1(record: dict[str, Any]) -> GenerativeModel:
    """The stage-1 model a record describes, frozen (weights still to be loaded), built without
    touching the global random state (the stage-2 initial weights do not depend on it)."""
    cfg = from_dict(record["config"])
    spec = ModelSpec.from_dict(record["spec"])
    with torch.random.fork_rng(devices=[]):
        model = MODELS.get(cfg.family).from_config(
            cfg.model, spec.shape, spec.num_classes, spec.vocab
        )
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode (a :class:`TwoStage` keeps it there when trained)."""
    model.requires_grad_(False)
    return model.eval()


class TwoStage(GenerativeModel):
    """A model over the latents of a frozen stage-1 autoencoder, held as ``self.autoencoder``
    (see the module docstring). Families set ``latent_kind`` (``"codes"`` or ``"continuous"``),
    build what they train in ``__init__`` and declare it in :meth:`players`."""

    conditional = True  # on the data's labels, when it has them
    latent_kind: str = ""
    #: what to train instead, in an error message (a prior over continuous latents: use ldm)
    other_family: str = ""

    def __init__(self, config: Any, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        record = config.stage1
        if record is None:
            raise ConfigError(
                f"{self.family} models need their stage-1 run: give model.autoencoder=RUN_DIR (a "
                "trained autoencoder on the same data); it is recorded when training starts"
            )
        missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise ConfigError(
                f"model.stage1 is written when training starts and lacks {missing[0]!r}: set "
                "model.stage1=null and give model.autoencoder=RUN_DIR"
            )
        if tuple(record["spec"]["shape"]) != tuple(spec.shape):
            raise ConfigError(
                f"the stage-1 run {record['path']} models examples of shape "
                f"{tuple(record['spec']['shape'])}; this model's are {tuple(spec.shape)}"
            )
        self.autoencoder = build_stage1(record)
        self.latent_spec: LatentSpec = self.autoencoder.latent()
        # continuous latents of a codes stage 1: the vectors behind its codes
        self.via_vectors = self.latent_kind == "continuous" and self.latent_spec.kind == "codes"
        if self.via_vectors:
            self.latent_spec = LatentSpec("continuous", tuple(self.latent_spec.vectors))

    # --- binding to a stage-1 run ----------------------------------------------------------------
    @classmethod
    def bind(cls, config: Any, dataset: Dataset, *, resume: bool = False) -> Any:
        """Load ``model.autoencoder``, check it against ``dataset`` and record it in the config
        (``model.stage1``). On resume the run's record stands (its stage-1 weights are in its
        checkpoints; the stage-1 directory may be gone), and naming another stage-1 is refused."""
        path = config.autoencoder
        if resume and config.stage1 is not None:
            if path and not _same_stage1(path, config.stage1):
                raise ConfigError(
                    f"this run's stage 1 is {config.stage1['path']}; model.autoencoder={path} "
                    "names another (a second stage cannot change its first stage: start a new run)"
                )
            return config
        if not path:
            raise ConfigError(
                f"{cls.family} models need model.autoencoder=RUN_DIR: a trained stage-1 "
                "autoencoder run on the same data"
            )
        try:
            run = load_run(path)
        except CheckpointError as e:
            raise ConfigError(f"model.autoencoder={path}: {e}") from None
        cls._check_stage1(run, dataset, path)
        return dataclasses.replace(config, stage1=stage1_record(run, dataset))

    @classmethod
    def _check_stage1(cls, run: Any, dataset: Dataset, path: str) -> None:
        latent = run.model.latent()
        if latent is None:
            raise ConfigError(
                f"model.autoencoder={path} is a {run.config.family} run, not an autoencoder (its "
                "model has no latent to encode to); give a stage-1 run such as vqvae or vae"
            )
        vectors = cls.latent_kind == "continuous" and latent.vectors is not None
        if latent.kind != cls.latent_kind and not vectors:
            what = {"codes": "discrete codes", "continuous": "continuous latents"}
            raise ConfigError(
                f"{cls.family} models need a stage 1 with {what[cls.latent_kind]}; "
                f"model.autoencoder={path} ({run.config.family}) encodes to "
                f"{what.get(latent.kind, latent.kind)}"
                + (f" (the {cls.other_family} family models those)" if cls.other_family else "")
            )
        theirs = tuple(run.model.spec.shape)
        if theirs != tuple(dataset.shape):
            raise DataError(
                f"model.autoencoder={path} was trained on examples of shape {theirs} "
                f"({run.config.data.name or run.config.data.path}); this run's data "
                f"{dataset.name!r} has shape {tuple(dataset.shape)}"
            )
        stage1_data = run.dataset
        if stage1_data.kind != dataset.kind or data_hash(stage1_data) != data_hash(dataset):
            raise DataError(
                f"model.autoencoder={path} was trained on other data: "
                f"{stage1_data.name!r} ({len(stage1_data.train) + len(stage1_data.val)} "
                f"examples), this run's is {dataset.name!r} "
                f"({len(dataset.train) + len(dataset.val)} examples) and their contents differ; "
                "train the second stage on the data of its first"
            )

    def initialize(self, dataset: Dataset) -> None:
        """Copy the frozen stage-1 weights from the recorded run (checked by its checksum)."""
        record = self.config.stage1
        try:
            run = load_run(record["path"])
        except CheckpointError as e:
            raise ConfigError(f"the stage-1 run of this model cannot be read: {e}") from None
        if run.sha256 != record["sha256"]:
            raise CheckpointError(
                f"the stage-1 run {record['path']} changed since it was recorded (its checkpoint's "
                f"sha256 is {run.sha256}, recorded {record['sha256']})"
            )
        load_state_dict_checked(self.autoencoder, run.model.state_dict(), record["path"])

    # --- the frozen stage 1 -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> TwoStage:
        """Train mode for what is trained; the stage-1 autoencoder stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> stage-1 latents (``latent_spec``), deterministic."""
        if self.via_vectors:
            return self.autoencoder.encode_vectors(x.to(self.device))
        return self.autoencoder.encode(x.to(self.device))

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Stage-1 latents -> examples in data space; images are clamped to their range [-1, 1]."""
        x = self.autoencoder.decode_vectors(z) if self.via_vectors else self.autoencoder.decode(z)
        return x.clamp(-1.0, 1.0) if len(self.spec.shape) == 3 else x


__all__ = ["TwoStage", "build_stage1", "data_hash", "freeze", "stage1_record"]
