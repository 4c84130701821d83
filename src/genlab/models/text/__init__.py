"""Discrete diffusion over text: masked diffusion (MDLM, :mod:`.mdlm`). Importing this package
registers the families in :data:`genlab.registry.MODELS`."""

from genlab.models.text import mdlm
from genlab.models.text.mdlm import MDLM, MDLMConfig

__all__ = ["MDLM", "MDLMConfig", "mdlm"]
