"""lusjax: self-supervised learning on lung ultrasound video, in JAX/Flax."""

__version__ = "0.1.0"
