"""beft: bias-efficient fine-tuning of language models (BEFT, arXiv 2509.15974), as a Hydra experiment framework."""

__version__ = "0.1.0"

import warnings

# PEFT (0.21) still calls a transformers 5 method that now warns on every adapter it builds; nothing to act on.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
