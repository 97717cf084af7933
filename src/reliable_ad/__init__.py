"""ReliableAD: usable e-commerce ad images from diffusion models, judged and improved with human feedback."""

__version__ = "0.1.0"
