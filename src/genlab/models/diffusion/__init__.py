"""Continuous diffusion in one formulation ``x_t = s(t)(x_0 + σ(t) ε)``: processes,
parameterizations, objectives, samplers, guidance and likelihood."""

from genlab.models.diffusion import classifier, samplers  # noqa: F401  (registers them)
from genlab.models.diffusion.model import Denoiser, Diffusion, DiffusionConfig, FlowMatching
from genlab.models.diffusion.process import PROCESSES, Process, make_process
from genlab.models.diffusion.samplers import sigma_schedule

__all__ = [
    "PROCESSES",
    "Denoiser",
    "Diffusion",
    "DiffusionConfig",
    "FlowMatching",
    "Process",
    "make_process",
    "sigma_schedule",
]
