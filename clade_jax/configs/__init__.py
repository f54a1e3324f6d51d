"""Every config, importable from the installed package (`clade_jax.configs.NAME`).

The `configs/` folder of a clone names these files, so `--config=configs/NAME.py` works
there; the `clade-jax` command finds them from any folder.
"""
