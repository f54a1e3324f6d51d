"""Scale-out: the same training and inference on 1 device, 4 devices, 2 processes x 2.

The slow tests launch `train.py` and `infer.py` as real processes on fake CPU devices
(2 processes talk over localhost, with JAX's gloo CPU collectives), with the same
global batch and seed, and compare losses, parameters and outputs. The fast tests
check the pieces in this process (conftest's 2 devices).

A new method is covered by adding its tiny config to `CONFIGS`.
"""

import dataclasses
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import nibabel as nib
import numpy as np
import pytest

import infer
from clade_jax import checkpointing
from clade_jax import distributed
from clade_jax import inference
from clade_jax import methods
from clade_jax import metric_writer
from clade_jax import train
from clade_jax import volume_srr
from clade_jax.data import patches as patches_lib
from clade_jax.methods import clade
from configs import mri
from tests import phantoms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The CLADE family at test size: 16-pixel patches, 4-feature networks, XLA's own
# convolutions (the fastest to compile on CPU). Global batch 4: one row per device
# on 4 devices.
CLADE_TINY = (
    "--config.data.patch_size=16", "--config.data.num_threads=1",
    "--config.model.features=4", "--config.model.num_blocks=1",
    "--config.model.disc_features=4", "--config.model.disc_layers=2",
    "--config.model.conv_impl=xla", "--config.eval.stride=8", "--config.eval.batch_size=32")
# Shared by every config: the schedule the tests compare.
SCHEDULE = ("--config.train.batch_size=4", "--config.train.log_every=1",
            "--config.train.sample_every=100", "--config.ckpt.every=3")
# CLADE and SMORE: the two train steps and inference paths there are. GLADE (CLADE's
# step with instance norm and other weights) ran here too; it added two minutes of CI and
# no path of the data-parallel machinery (tests/test_layers_fast.py and
# tests/test_models.py cover instance norm).
CONFIGS = [
    pytest.param(("--config=configs/mri.py", *CLADE_TINY), id="clade"),
    pytest.param(("--config=configs/smore.py", "--config.data.patch_size=16",
                  "--config.data.num_threads=1", "--config.model.features=4",
                  "--config.model.num_blocks=1", "--config.eval.batch_size=32",
                  "--config.eval.stride=8",
                  # Runs of 3 and 5 steps share one learning rate only without the cosine.
                  "--config.train.schedule=constant"), id="smore"),
]
FIRST, TOTAL = 3, 5  # Steps before the checkpoint the multi-process runs stop at, and after.
RTOL, ATOL = 1e-5, 1e-6  # Float rounding of a gradient summed over another device count.


# ------------------------------------------------------------------ fast checks


def test_settings_come_from_arguments_then_environment(monkeypatch):
  for name in (distributed.COORDINATOR_ENV, distributed.NUM_PROCESSES_ENV,
               distributed.PROCESS_ID_ENV):
    monkeypatch.delenv(name, raising=False)
  assert distributed.resolve() == distributed.Settings(None, None, None)  # JAX detects.
  monkeypatch.setenv(distributed.COORDINATOR_ENV, "head:1234")
  monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "4")
  monkeypatch.setenv(distributed.PROCESS_ID_ENV, "3")
  assert distributed.resolve() == distributed.Settings("head:1234", 4, 3)
  assert distributed.resolve("other:1", 2, 0) == distributed.Settings("other:1", 2, 0)
  with pytest.raises(distributed.DistributedError, match=r"process_id=4 must be in \[0, "
                     r"num_processes=4\)"):
    distributed.resolve(process_id=4)
  monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "four")
  with pytest.raises(distributed.DistributedError, match="JAX_NUM_PROCESSES='four' is not"):
    distributed.resolve()


def test_start_initialises_only_when_asked_and_any_value_implies_it(monkeypatch):
  calls = []
  monkeypatch.setattr(distributed, "initialize", lambda *cluster: calls.append(cluster))
  assert not distributed.start()  # No flag, no value: one process, nothing started.
  assert calls == []
  assert distributed.start(multihost=True)
  assert distributed.start(num_processes=2)  # A value alone implies --multihost.
  assert distributed.start(False, "head:1234", 2, 1)
  assert calls == [(None, None, None), (None, 2, None), ("head:1234", 2, 1)]


def test_infer_cli_refuses_an_impossible_process_id_in_one_line(capsys):
  assert infer.main(["--workdir", "w", "--input", "a.nii.gz", "--output", "b.nii.gz",
                     "--num-processes", "2", "--process-id", "2"]) == 1
  assert capsys.readouterr().err.strip().splitlines() == [
      "error: process_id=2 must be in [0, num_processes=2)"]


@dataclasses.dataclass(frozen=True)
class _Device:
  id: int
  process_index: int


class _Sharding:
  """The rows each device holds under a batch sharding, as `devices_indices_map` says."""

  def __init__(self, rows_of_device):
    self.rows_of_device = rows_of_device

  def devices_indices_map(self, shape):
    return {device: (slice(*rows),) for device, rows in self.rows_of_device.items()}


def test_each_process_feeds_the_block_its_devices_hold(monkeypatch):
  # 2 processes x 2 devices, process 1's devices listed first: its block is still 1.
  layout = {_Device(2, 1): (4, 6), _Device(3, 1): (6, 8),
            _Device(0, 0): (0, 2), _Device(1, 0): (2, 4)}
  for process, block in ((0, 0), (1, 1)):
    monkeypatch.setattr(jax, "process_index", lambda p=process: p)
    assert distributed.batch_shard(_Sharding(layout), 8) == (block, 2)
  interleaved = {_Device(0, 0): (0, 2), _Device(2, 1): (2, 4),
                 _Device(1, 0): (4, 6), _Device(3, 1): (6, 8)}
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  with pytest.raises(ValueError, match="rows 0..5 that are not one block"):
    distributed.batch_shard(_Sharding(interleaved), 8)


def test_one_process_feeds_the_whole_batch():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
  assert distributed.batch_shard(sharding, 4 * jax.device_count()) == (0, 1)
  assert distributed.agree(True) and not distributed.agree(False)
  array = jax.device_put(np.arange(8.0), sharding)
  np.testing.assert_array_equal(distributed.to_host(array), np.arange(8.0))


def test_a_volume_split_over_the_devices_equals_one_device(monkeypatch):
  if jax.default_backend() == "cpu":
    assert jax.device_count() == 2  # conftest's fake devices: the slices are split.
  config = mri.get_config()
  config.model.features, config.model.num_blocks = 4, 1
  config.model.disc_features, config.model.disc_layers = 4, 2
  config.model.conv_impl = "xla"
  config.data.patch_size, config.eval.stride, config.eval.batch_size = 16, 8, 32
  generator, _ = clade.create_models(config.model)  # G_X alone: what super_resolve uses.
  params = {"G_X": jax.jit(generator.init)(train.init_key(0),
                                           np.zeros((1, 16, 16, 1), np.float32))["params"]}
  data = phantoms.body_phantom((24, 20, 6), seed=3)
  affine = np.diag([1.0, 1.0, 4.0, 1.0])
  # Whole slices compile fastest; the patch mode split over a mesh is test_srr.py's.
  options = volume_srr.SROptions(progress=False, slices_per_chunk=3, mode="full")
  split, _ = inference.super_resolve(data, affine, params, config, options)
  monkeypatch.setattr(volume_srr, "default_mesh", lambda: None)
  one, _ = inference.super_resolve(data, affine, params, config, options)
  np.testing.assert_allclose(split, one, rtol=1e-6, atol=1e-6)


def test_train_cli_refuses_an_impossible_process_id_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "train.py", "--config=configs/mri.py", f"--workdir={tmp_path}",
       "--num_processes=2", "--process_id=2", "--coordinator_address=localhost:1"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: process_id=2 must be in [0, num_processes=2)"]


# ------------------------------------------------- 1 device, 4 devices, 2 processes


def _free_port() -> int:
  try:
    import portpicker
    return portpicker.pick_unused_port()
  except ImportError:
    with socket.socket() as s:
      s.bind(("localhost", 0))
      return s.getsockname()[1]


def _launch(argv, devices: int, log_path):
  """A process of its own with `devices` fake CPU devices; its output goes to a file."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT), log


def _launch_group(argv, devices: int, processes: int, log_stem):
  """The `processes` processes of one distributed run (one plain process for 1)."""
  if processes == 1:
    return [_launch(argv, devices, f"{log_stem}.log")]
  # infer.py spells its flags with dashes, train.py (absl) with underscores.
  sep = "-" if argv[0] == "infer.py" else "_"
  port = _free_port()
  return [_launch([*argv, f"--coordinator{sep}address=localhost:{port}",
                   f"--num{sep}processes={processes}", f"--process{sep}id={i}"],
                  devices, f"{log_stem}_{i}.log") for i in range(processes)]


def _wait(launched, timeout=900):
  """Waits for every process; fails with the tail of the log of any that failed."""
  deadline = time.monotonic() + timeout
  failures = []
  for process, log in launched:
    try:
      process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    log.close()
    if process.returncode != 0:
      with open(log.name) as f:
        failures.append(f"{log.name} (exit {process.returncode}):\n{f.read()[-3000:]}")
  if failures:
    pytest.fail("\n".join(failures))


@pytest.fixture(scope="module", params=CONFIGS)
def runs(request, tmp_path_factory, data_root):
  """Workdirs of the same run on 1 device (TOTAL steps), on 4 devices and on 2 processes
  x 2 devices (FIRST steps), and of the 2-process run resumed by 1 process (to TOTAL)."""
  base = tmp_path_factory.mktemp("runs")
  flags = [*request.param, f"--config.data.root={data_root}", *SCHEDULE]
  dirs = {name: str(base / name) for name in ("one_device", "four_devices",
                                                "two_processes", "resumed")}
  train_cmd = lambda name, steps: ["train.py", *flags, f"--workdir={dirs[name]}",
                                   f"--config.train.num_steps={steps}"]
  started = time.perf_counter()
  # Concurrently, for wall time: the two processes of one run wait for each other anyway.
  launched = (_launch_group(train_cmd("one_device", TOTAL), 1, 1, base / "one_device")
              + _launch_group(train_cmd("four_devices", FIRST), 4, 1, base / "four_devices")
              + _launch_group(train_cmd("two_processes", FIRST), 2, 2, base / "two_processes"))
  _wait(launched)
  shutil.copytree(dirs["two_processes"], dirs["resumed"])
  _wait(_launch_group(train_cmd("resumed", TOTAL), 1, 1, base / "resumed"))
  print(f"\n{request.param[0]}: the four runs took {time.perf_counter() - started:.0f} s")
  return dirs


def _metrics(workdir):
  return {m["step"]: m for m in metric_writer.read_metrics(workdir)}


def _assert_same_run(workdir, reference, step):
  """Losses and gradient norms of every logged step and the params at `step` agree."""
  got, want = _metrics(workdir), _metrics(reference)
  assert sorted(got) == list(range(1, step + 1)), workdir
  for s in got:
    for name in want[s]:
      if name.startswith(("loss/", "grad_norm/")):
        np.testing.assert_allclose(got[s][name], want[s][name], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{workdir}: {name} at step {s}")
  params, config = checkpointing.restore_params(workdir, step)
  expected, _ = checkpointing.restore_params(reference, step)
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  leaves, tree = jax.tree.flatten(expected)
  different = [i for i, (a, b) in enumerate(zip(jax.tree.leaves(params), leaves))
               if not np.allclose(a, b, rtol=RTOL, atol=ATOL)]
  if different:
    # A parameter the objective does not depend on (a bias under instance norm) gets a
    # gradient of pure rounding noise, which Adam's normalisation turns into steps of
    # about the learning rate either way: such parameters may differ, no others.
    names = [jax.tree_util.keystr(path) for path, _ in
             jax.tree_util.tree_flatten_with_path(expected)[0]]
    shifted = jax.tree.unflatten(tree, [leaf + 1.0 if i in different else leaf
                                        for i, leaf in enumerate(leaves)])
    config.train.num_steps = 0  # One compiled objective for runs of any length.
    losses = _objective(config.to_json())
    np.testing.assert_allclose(
        list(losses(shifted).values()), list(losses(expected).values()), rtol=RTOL,
        err_msg=f"{workdir}: {', '.join(names[i] for i in different)} differ and matter")
    everything = jax.tree.map(lambda leaf: leaf + 1.0, expected)
    assert not np.allclose(list(losses(everything).values()),
                           list(losses(expected).values()), rtol=RTOL)  # Can fail.


@functools.lru_cache(maxsize=None)
def _objective(config_json):
  """params -> the losses of the method's train step on the first batch of the data."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  method = methods.of(config)
  _, source = train.build_data(config, method)
  batch = patches_lib.make_dataset(source, config.train.batch_size, seed=config.seed)[0]
  state = jax.jit(functools.partial(method.init_state, config))(train.init_key(0))
  step = jax.jit(method.make_train_step(config))

  def losses(params):
    _, metrics = step(dataclasses.replace(state, params=params), batch)
    return {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}

  return losses


@pytest.mark.slow
def test_one_four_and_two_by_two_devices_train_the_same(runs):
  for name in ("four_devices", "two_processes"):
    _assert_same_run(runs[name], runs["one_device"], FIRST)
  two = runs["two_processes"]
  # Process 0 alone wrote the files; both processes took part in every program.
  for name in ("config.json", "holdout_sr.png", f"samples/step_{FIRST:07d}.png"):
    assert os.path.exists(os.path.join(two, name)), name
  with open(os.path.join(two, train.PROVENANCE_FILE)) as f:
    info = json.load(f)
  assert info["processes"] == 2 and len(info["devices"]) == 4
  with open(os.path.join(two, "checkpoints", str(FIRST), "data", "metadata")) as f:
    assert json.load(f) == {"next_index": FIRST}


@pytest.mark.slow
def test_a_two_process_checkpoint_continues_in_one_process(runs):
  _assert_same_run(runs["resumed"], runs["one_device"], TOTAL)


@pytest.mark.slow
def test_two_processes_super_resolve_like_one_device(runs, data_root, tmp_path):
  workdir = runs["two_processes"]
  argv = lambda output: ["infer.py", "--workdir", workdir, "--input",
                         str(data_root / "b.nii.gz"), "--output", str(output),
                         "--no-progress", "--no-figure"]
  one, two = tmp_path / "one.nii.gz", tmp_path / "two.nii.gz"
  _wait(_launch_group(argv(one), 1, 1, tmp_path / "one")
        + _launch_group(argv(two), 2, 2, tmp_path / "two"))
  np.testing.assert_allclose(nib.load(two).get_fdata(), nib.load(one).get_fdata(),
                             rtol=1e-6, atol=1e-6)
