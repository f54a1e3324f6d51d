"""Configuration problems reported as one line naming the field."""

from __future__ import annotations


class ConfigError(ValueError):
  """A configuration that cannot work; the message names the field."""
