"""Generators and discriminators (flax linen, applied as pure functions)."""

from clade_jax.models.discriminator import PatchDiscriminator
from clade_jax.models.generator import ResnetGenerator
from clade_jax.models.layers import demodulate
