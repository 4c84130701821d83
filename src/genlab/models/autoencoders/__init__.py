"""Autoencoders on one convolutional encoder/decoder (:mod:`.conv_autoencoder`): the VQ-VAE
(:mod:`.vqvae`), VQGAN (:mod:`.vqgan`, the VQ-VAE with the patch-GAN and perceptual losses of
:mod:`.adversarial`) and the KL autoencoder (:mod:`.kl_autoencoder`), the stage 1s of the two-stage
pipelines. Importing this package registers them in :data:`genlab.registry.MODELS`."""

from genlab.models.autoencoders import kl_autoencoder, vqgan, vqvae  # noqa: F401
