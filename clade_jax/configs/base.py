"""The config every method's config starts from: the fields the shared code reads.

    config = base.get_config("mymethod")  # then add config.model and what else it needs

The training driver (`clade_jax/train.py`), the data preparation (`data/patches.py`,
`data/preprocess.py`, `data/intensity.py`), the held-out check (`holdout.py`),
checkpointing and inference (`inference.py`, `cli/infer.py`, `cohort.py`) read the
groups below, whatever the method. Each field is documented here once; a method's
config changes the values that differ for it and adds its own groups (`model`, and
`loss` for CLADE) and fields. `config_validation.RANGES` and `ENUMS` check these
fields; a method checks its own with its `config_ranges` and `config_enums`
(`clade_jax/methods/__init__.py`).

The defaults are CLADE's (configs/mri.py), the project's first method; the other
methods' configs set what differs for them.
"""

import ml_collections


def get_config(method: str) -> ml_collections.ConfigDict:
  """The shared groups with their defaults, for the method `method`.

  Args:
    method: the `clade_jax.methods` module (or registered method) that trains it.

  Returns:
    A config with `method`, `seed` and the `data`, `train`, `ckpt` and `eval` groups.
  """
  config = ml_collections.ConfigDict()
  config.method = method
  config.seed = 0  # Initialises the networks and orders the training examples.

  # The scans and how they are prepared, for training and for inference alike.
  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # A NIfTI file, a directory of them, or a glob.
  config.data.make_demo = False  # Write the bundled demo volumes into `root` first.
  # The isotropic ground truth of the first volume, if known (a simulation, the demo):
  # the end of training then scores the held-out slice against it (clade_jax/holdout.py).
  config.data.truth = ""
  config.data.thick_axis = -1  # Voxel axis of the thick slices; -1 detects it.
  # The low-resolution plane trained on (and held out from): auto (the first in-plane
  # axis), sagittal, coronal, axial.
  config.data.lr_plane = "auto"
  config.data.target_spacing = 0.0  # Isotropic spacing in mm; 0 = finest in-plane spacing.
  # A 4D file: which volume to use (-1: the file must hold one). Complex data: 'refuse'
  # or 'magnitude' (|z|, the phase dropped).
  config.data.volume_index = -1
  config.data.complex = "refuse"
  # The acquisition's slice profile along the thick axis, for the methods that simulate
  # it and for data consistency: NIfTI stores the slice spacing, not the thickness.
  # Thickness 0 = the spacing (no gap).
  config.data.slice_thickness = 0.0
  # 'gaussian' (FWHM = thickness), 'rect', or 'estimate': from the scan before training
  # (clade_jax/data/profile_estimation.py; a slice_thickness given is then kept).
  config.data.slice_profile = "gaussian"
  # Training examples: patches of this side, so many per slice per epoch.
  config.data.patch_size = 32
  config.data.patches_per_slice = 4
  # A patch is used if at least `min_foreground` of its pixels are brighter than
  # `background_level` of the robust intensity range; slices with no such patch are
  # skipped.
  config.data.min_foreground = 0.3
  config.data.background_level = 0.05
  # The intensity window mapped to [-1, 1] for the networks: 'percentile' (these robust
  # percentiles of each scan) or 'window' (intensity_window, in the scan's units: HU for
  # CT, see configs/ct.py). Voxels beyond it bypass the networks (eval.outside_window).
  config.data.normalization = "percentile"
  config.data.percentiles = (0.5, 99.5)
  config.data.intensity_window = (-1024.0, 2048.0)  # Used with normalization='window'.
  config.data.num_threads = 4  # Example-sampling threads.
  config.data.prefetch = 8  # Batches prefetched ahead of the train step.

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32  # Global batch, sharded over the devices.
  # The run's length: `num_steps` when > 0, else `epochs` passes over the method's
  # training examples (a method whose schedule needs the length forbids 0).
  config.train.epochs = 10
  config.train.num_steps = 0
  # The optimiser's (Adam's, for every method here).
  config.train.learning_rate = 2e-4
  config.train.beta1 = 0.5
  config.train.beta2 = 0.999
  config.train.log_every = 50  # Steps between lines of metrics.jsonl.
  config.train.sample_every = 500  # Steps between pictures in samples/.

  config.ckpt = ml_collections.ConfigDict()
  config.ckpt.every = 1000  # Steps between checkpoints (and one at the end).
  config.ckpt.keep = 3  # The newest this many are kept.

  # Inference: `clade_jax/inference.py` and the held-out check; `infer.py` flags
  # override these for one call.
  config.eval = ml_collections.ConfigDict()
  config.eval.mode = "patch"  # 'patch' (sliding window) or 'full' (whole slices).
  config.eval.batch_size = 256  # Examples per network call: sets the peak memory.
  # Project the output onto the volumes that re-acquired with the slice profile give
  # the acquired slices (clade_jax/data/consistency.py). Off: the papers have no such step.
  config.eval.data_consistency = False
  config.eval.consistency_regularisation = 0.0  # 0: exact; > 0: within the noise.
  # Voxels at or beyond the intensity window: 'restore' takes them from the interpolated
  # input, so the output keeps the scan's range (clade_jax/data/intensity.py); 'clip'
  # maps the networks' output straight back, flattening them to the window.
  config.eval.outside_window = "restore"
  return config
