"""Normalizing flows: invertible layers (:mod:`.layers`), the discrete flow families NICE, RealNVP,
Glow, NSF, MAF and IAF (:mod:`.flows`) and the continuous normalizing flow FFJORD (:mod:`.cnf`). Importing
this package registers the families in :data:`genlab.registry.MODELS`."""

from genlab.models.flows import cnf, flows, layers
from genlab.models.flows.cnf import FFJORD, FFJORDConfig
from genlab.models.flows.flows import IAF, MAF, NICE, NSF, Flow, Glow, RealNVP

__all__ = [
    "FFJORD",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "FFJORDConfig",
    "Flow",
    "Glow",
    "RealNVP",
    "cnf",
    "flows",
    "layers",
]
