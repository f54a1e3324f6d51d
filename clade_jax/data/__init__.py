"""Volumes, their geometry, degradation and the unpaired patch datasets."""
