"""clade-jax: unsupervised super-resolution of anisotropic 3D medical volumes."""

__version__ = "0.1.0"
