"""Training data: prepared volumes and the grain pipeline every method shares, and
CLADE's unpaired patches (domain X from low-resolution-plane slices, Y from high).

Every volume is resampled to isotropic along its thick axis and normalised to [-1, 1].
Domain X holds the slices of a low-resolution plane (they contain the thick axis), or
of both such planes (`lr_planes='both'`), the second one's slices turned so that the
thick direction lies on the same image axis as in the first one's, as inference turns
them (`volume_srr.lr_stack`); domain Y the slices of the high-resolution plane
(perpendicular to the thick axis).
An epoch draws `patches_per_slice` random patches from every X slice (paper Sec. 4.5),
each paired with a patch from a random Y slice: the pairs carry no correspondence.

The dataset is random access: sample i is a pure function of (seed, i), so grain can
shuffle, shard per host and checkpoint the iterator as a single index.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import grain
import numpy as np
from tqdm import tqdm

from clade_jax import volume_srr
from clade_jax.data import foreground
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib

LR_PLANES = ("trained", "both")  # Domain X: the trained low-resolution plane, or both.


@dataclasses.dataclass(frozen=True)
class PreparedVolume:
  """A training volume: as inference prepares it, and both grids in network units.

  Attributes:
    path: the file it was read from.
    scan: the volume as `preprocess.prepare_input` gives it (scan units, isotropic).
    normalised_isotropic: ``scan.isotropic`` mapped to [-1, 1] by ``scan.normalizer``.
    normalised_acquired: the acquired samples (original grid) mapped to [-1, 1].
  """

  path: str
  scan: preprocess.PreparedInput
  normalised_isotropic: np.ndarray
  normalised_acquired: np.ndarray

  @property
  def thick_axis(self) -> int:
    return self.scan.thick_axis

  @property
  def lr_axis(self) -> int:
    return self.scan.lr_axis

  @property
  def normalizer(self) -> volume_lib.Normalizer:
    return self.scan.normalizer


def list_volumes(root: str) -> list[str]:
  """NIfTI paths under `root`: one file, a directory of files, or a glob."""
  if not root:
    raise volume_lib.VolumeError("no training data: set --config.data.root=DIR")
  if os.path.isdir(root):
    paths = sorted(p for p in glob.glob(os.path.join(root, "*")) if volume_lib.is_nifti(p))
  elif os.path.isfile(root):
    paths = [root]
  else:
    paths = sorted(p for p in glob.glob(root) if volume_lib.is_nifti(p))
  if not paths:
    raise volume_lib.VolumeError(f"{root}: no NIfTI volumes (.nii, .nii.gz) found")
  return paths


def load_options(data_config) -> dict:
  """`volume.load_volume`'s options from a run's ``config.data``."""
  index = data_config.get("volume_index", -1)
  return dict(volume_index=None if index < 0 else index,
              complex_mode=data_config.get("complex", "refuse"))


def prepare_volume(path: str, data_config) -> PreparedVolume:
  """Loads one training volume and prepares it exactly as inference will."""
  vol = volume_lib.load_volume(path, **load_options(data_config))
  prepared = preprocess.prepare_input(vol.data, vol.affine, data_config, name=path)
  thick, lr_axis = prepared.thick_axis, prepared.lr_axis
  for name, shape, axis in (("resampled", prepared.isotropic.shape, lr_axis),
                            ("acquired", vol.data.shape, thick)):
    if min(np.delete(shape, axis)) < data_config.patch_size:
      raise volume_lib.VolumeError(
          f"{path}: {name} slices {shape} are smaller than the {data_config.patch_size}-pixel patch")
  norm = prepared.normalizer
  return PreparedVolume(path, prepared, norm.forward(prepared.isotropic),
                        norm.forward(vol.data))


def prepare_volumes(data_config) -> list[PreparedVolume]:
  """Every training volume of ``data_config.root``, prepared (with a progress bar)."""
  paths = list_volumes(data_config.root)
  with tqdm(paths, desc="preparing volumes", unit="vol", leave=False) as bar:
    return [prepare_volume(p, data_config) for p in bar]


def x_plane_slices(volume: PreparedVolume, plane: int) -> np.ndarray:
  """The X slices of one low-resolution plane, ``[S, H, W]`` normalised.

  Args:
    volume: a prepared volume.
    plane: 0, the trained plane (``scan.lr_axis``), or 1, the other plane that contains
      the thick axis; its slices are transposed where needed so that the thick direction
      lies on the trained plane's image axis, exactly as inference turns them.
  """
  axis = volume.scan.lr_axes[plane]
  if plane == 0:
    return volume_lib.plane_slices(volume.normalised_isotropic, axis)
  slices, _ = volume_srr.lr_stack(volume.normalised_isotropic, axis, volume.thick_axis,
                                  volume_srr.thick_on_rows(volume.scan))
  return slices


class UnpairedPatches:
  """Random-access source of {'x': [P, P, 1], 'y': [P, P, 1]} float32 patch pairs.

  With `simulators` each example also holds 'y_lr' and 'y_hr': the Y patch as the
  thick-slice acquisition would have made it (oriented like the X patches) and the
  patch itself.

  Args:
    volumes: prepared training volumes.
    patch_size: square patch side.
    patches_per_slice: patches drawn from each X slice per epoch.
    min_foreground: fraction of a patch that must be foreground.
    background_level: foreground is brighter than this fraction of [-1, 1].
    hr_slices: 'acquired' or 'all' (see configs/mri.py).
    holdout: slices (volume index, slice index) of the trained low-resolution plane
      kept out of training. With both planes, every slice of the other plane crosses
      such a slice in one line along the thick axis (as Y slices cross it in one line
      across it): the slice as a whole, the example that is scored, stays unseen.
    seed: base of every sample's random stream.
    simulators: optional, per volume: add simulated pairs made from the Y patches. One
      `Simulator` per volume, or with `lr_planes='both'` a pair of them, one per
      low-resolution plane in `lr_axes` order: each example's pair is then made like
      its X patch's plane (degraded along the in-plane axis that plane shares with Y).
    lr_planes: 'trained' (X from the trained plane, ``scan.lr_axis``) or 'both' (from
      both planes that contain the thick axis, ``scan.lr_axes``).
  """

  def __init__(self, volumes, *, patch_size=32, patches_per_slice=4, min_foreground=0.3,
               background_level=0.05, hr_slices="acquired", holdout=(), seed=0,
               simulators=None, lr_planes="trained"):
    if lr_planes not in LR_PLANES:
      raise ValueError(
          f"data.lr_planes must be one of {', '.join(LR_PLANES)}, got {lr_planes!r}")
    self.patch_size = patch_size
    self.simulators = simulators
    self.foreground = foreground.ForegroundPatches(patch_size, min_foreground,
                                                   background_level)
    self.seed = seed
    # One X stack per (volume, plane): x_stacks[k] holds slices of plane x_planes[k]
    # (0 trained, 1 the other) of volume x_volumes[k]. With one plane, k is the volume.
    planes = range(len(LR_PLANES) if lr_planes == "both" else 1)
    self.x_volumes = [v for v in range(len(volumes)) for _ in planes]
    self.x_planes = [p for _ in volumes for p in planes]
    self.x_stacks = [x_plane_slices(volumes[v], p)
                     for v, p in zip(self.x_volumes, self.x_planes)]
    if hr_slices == "acquired":
      self.y_stacks = [volume_lib.plane_slices(v.normalised_acquired, v.thick_axis)
                       for v in volumes]
    elif hr_slices == "all":
      self.y_stacks = [volume_lib.plane_slices(v.normalised_isotropic, v.thick_axis)
                       for v in volumes]
    else:
      raise ValueError(f"data.hr_slices must be 'acquired' or 'all', got {hr_slices!r}")
    holdout = {(v * len(planes), s) for v, s in holdout}  # The trained plane's stack.
    self.x_slices = self.foreground.require(
        [s for s in self.foreground.usable_slices(self.x_stacks) if s not in holdout],
        volumes, "slice")
    self.y_slices = self.foreground.require(self.foreground.usable_slices(self.y_stacks),
                                            volumes, "slice")
    self.epoch_length = patches_per_slice * len(self.x_slices)

  def __len__(self) -> int:
    return self.epoch_length

  def sample(self, record: int, index: int) -> dict[str, np.ndarray]:
    """The pair for X record `record` at global sample position `index`."""
    rng = np.random.default_rng([self.seed, index])
    xk, xs = self.x_slices[record % len(self.x_slices)]  # X stack, slice.
    yv, ys = self.y_slices[rng.integers(len(self.y_slices))]
    x = self.foreground.crop(self.x_stacks[xk][xs], rng)
    image = self.y_stacks[yv][ys]
    r, c = self.foreground.corner(image, rng)
    y = image[r:r + self.patch_size, c:c + self.patch_size]
    example = {"x": x[..., None].astype(np.float32), "y": y[..., None].astype(np.float32)}
    if self.simulators is not None:
      simulator = self.simulators[yv]
      if isinstance(simulator, (tuple, list)):  # One per plane: like the X patch's.
        simulator = simulator[self.x_planes[xk]]
      lr, hr = simulator.pair(image, r, c, rng)
      example.update(y_lr=lr[..., None], y_hr=hr[..., None])
    return example


def make_dataset(source, batch_size: int, *, seed: int,
                 shard_index: int = 0, shard_count: int = 1) -> grain.MapDataset:
  """Endless, per-epoch reshuffled batches of examples for one host.

  The global stream of examples is cut into blocks of `batch_size`; global batch k is
  blocks k * shard_count ... k * shard_count + shard_count - 1, and this host's batch k
  is block k * shard_count + shard_index. So the hosts together feed exactly the
  batches one host would, row for row, and each host only samples its own block.

  Args:
    source: random-access examples: ``len(source)`` per epoch and
      ``source.sample(record, index)`` (see `clade_jax.methods`).
    batch_size: the host's batch size (global batch / number of hosts).
    seed: shuffle seed.
    shard_index: this host's block of the global batch
      (`clade_jax.distributed.batch_shard`; jax.process_index() on a mesh in process
      order).
    shard_count: number of hosts (jax.process_count()).
  """
  ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
  ds = ds.map_with_index(lambda i, record: source.sample(record, i))
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds[shard_index::shard_count]
