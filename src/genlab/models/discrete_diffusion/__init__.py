"""Discrete diffusion over text: masked diffusion (MDLM, :mod:`.mdlm`) and block diffusion
(BD3-LM, :mod:`.bd3lm`) and score entropy (SEDD, :mod:`.sedd`). Importing this package registers the families in
:data:`genlab.registry.MODELS`."""

from genlab.models.discrete_diffusion import bd3lm, mdlm, sedd
from genlab.models.discrete_diffusion.bd3lm import BD3LM, BD3LMConfig
from genlab.models.discrete_diffusion.mdlm import MDLM, MDLMConfig
from genlab.models.discrete_diffusion.sedd import SEDD, SEDDConfig

__all__ = ["BD3LM", "MDLM", "SEDD", "BD3LMConfig", "MDLMConfig", "SEDDConfig", "bd3lm", "mdlm",
           "sedd"]  # fmt: skip
