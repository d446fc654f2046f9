"""beft: bias-efficient fine-tuning of language models (BEFT, arXiv 2509.15974), as a Hydra experiment framework."""

__version__ = "0.1.0"
