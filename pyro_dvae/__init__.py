"""pyro-dvae: VAEs with Gaussian, Logit-normal and Concrete latents, in Pyro."""

__version__ = "0.1.0"
