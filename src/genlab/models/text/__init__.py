"""Discrete diffusion over text: masked diffusion (MDLM, :mod:`.mdlm`) and block diffusion
(BD3-LM, :mod:`.bd3lm`). Importing this package registers the families in
:data:`genlab.registry.MODELS`."""

from genlab.models.text import bd3lm, mdlm
from genlab.models.text.bd3lm import BD3LM, BD3LMConfig
from genlab.models.text.mdlm import MDLM, MDLMConfig

__all__ = ["BD3LM", "MDLM", "BD3LMConfig", "MDLMConfig", "bd3lm", "mdlm"]
