"""Generators and discriminators (flax linen, applied as pure functions)."""
