"""The configs, where users and the design card expect them: `--config=configs/NAME.py`.

Each file here names a config of `clade_jax/configs/` (installed with the package, so
the `clade-jax` command finds them from any folder); edit the config there.
"""
