"""ftdyn: what fine-tuning does to pre-trained language models."""

__version__ = "0.1.0"
