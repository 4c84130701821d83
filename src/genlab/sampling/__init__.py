"""What sampling and likelihood share across families: the probability-flow ODE likelihood
(:mod:`genlab.sampling.likelihood`). The samplers themselves are registered in
:data:`genlab.registry.SAMPLERS` (:mod:`genlab.models.diffusion.samplers`)."""
