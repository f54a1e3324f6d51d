"""CLADE's train step invariants, and the shared driver end to end on 2 devices."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clade_jax import checkpointing, metric_writer, train
from clade_jax.methods import clade
from configs import mri


def tiny_config(root):
  config = mri.get_config()
  config.data.root = str(root)
  config.data.patch_size = 16
  config.data.num_threads = 1
  config.model.features = 4
  config.model.num_blocks = 1
  config.model.disc_features = 4
  config.model.disc_layers = 2  # A 16x16 patch leaves no logits after 3 layers.
  # XLA's own convolutions compile 3x faster than the CPU default (Winograd); the
  # formulations' equality, values and gradients, is tests/test_layers_fast.py's job.
  config.model.conv_impl = "xla"
  config.train.batch_size = 4
  config.train.num_steps = 4
  config.train.log_every = 1
  config.train.sample_every = 2
  config.ckpt.every = 2
  config.eval.stride = 8
  return config


def test_each_network_gets_only_the_gradient_of_its_own_loss(data_root):
  config = tiny_config(data_root)
  generator, discriminator = clade.create_models(config.model)
  params = clade.init_state(config, train.init_key(0)).params
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 1)), jnp.float32) for k in "xy"}
  run = lambda p: clade.compute_losses(p, batch, generator, discriminator, config.loss)
  grads = jax.jit(lambda p: (
      jax.grad(lambda q: run(q)[0])(p),
      jax.grad(lambda q: run(q)[1]["generator"])(p),
      jax.grad(lambda q: run(q)[1]["D_X"] + run(q)[1]["D_Y"])(p)))
  total, g_only, d_only = grads(params)
  for name in ("G_X", "G_Y"):
    jax.tree.map(np.testing.assert_allclose, total[name], g_only[name])
  for name in ("D_X", "D_Y"):
    jax.tree.map(np.testing.assert_allclose, total[name], d_only[name])
    # The generator loss must not train the discriminators.
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_only[name])) == 0.0


def test_generator_loss_is_the_weighted_sum_of_its_terms(data_root):
  config = tiny_config(data_root)
  generator, discriminator = clade.create_models(config.model)
  params = clade.init_state(config, train.init_key(0)).params
  batch = {k: jnp.full((2, 16, 16, 1), v) for k, v in (("x", 0.2), ("y", -0.4))}
  _, m = jax.jit(lambda p: clade.compute_losses(p, batch, generator, discriminator,
                                                 config.loss))(params)
  expected = (m["adversarial"] + config.loss.cyc * m["cycle"] + config.loss.ident * m["identity"]
              + config.loss.gmap * m["gmap"])
  np.testing.assert_allclose(m["generator"], expected, rtol=1e-6)


def test_non_finite_metrics_stop_training_with_a_clear_message(tmp_path):
  mngr = checkpointing.manager(str(tmp_path))
  with pytest.raises(train.TrainingDiverged, match="diverged at step 7: loss/cycle is NaN"):
    train._check_finite({"loss/cycle": np.float32("nan"), "loss/gmap": 1.0}, 7, "w", mngr)


def test_train_resume_continues_steps_data_and_params(data_root, tmp_path):
  """4 steps + resume to 6 equals 6 steps in one go; 2 devices shard the batch."""
  if jax.default_backend() == "cpu":
    assert jax.device_count() == 2  # conftest's fake devices: the batch is sharded.
  config = tiny_config(data_root)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config.train.num_steps = 6
  final = train.train_and_evaluate(config, straight)

  config.train.num_steps = 4
  train.train_and_evaluate(config, resumed)
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints")))[-1] == "4"
  config.train.num_steps = 6
  again = train.train_and_evaluate(config, resumed)

  assert int(again.step) == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               again.params, final.params)
  steps = [m["step"] for m in metric_writer.read_metrics(resumed)]
  assert steps == [1, 2, 3, 4, 5, 6]
  for name in ("holdout_sr.png", "samples/step_0000006.png", "config.json"):
    assert os.path.exists(os.path.join(resumed, name)), name
  assert os.listdir(os.path.join(resumed, "tensorboard"))
  with open(os.path.join(resumed, "checkpoints", "6", "data", "metadata")) as f:
    assert json.load(f) == {"next_index": 6}  # The data iterator moved on with the steps.


def test_too_small_patches_for_the_discriminator_are_a_config_error(data_root):
  config = tiny_config(data_root)
  config.model.disc_layers = 3
  with pytest.raises(ValueError, match="patch_size=16 is too small"):
    clade.init_state(config, train.init_key(0))


def test_resume_with_another_architecture_is_refused(data_root, tmp_path):
  config = tiny_config(data_root)
  fields = clade.architecture_fields
  checkpointing.write_config(str(tmp_path), config, fields)
  config.model.features = 8
  with pytest.raises(checkpointing.CheckpointError, match="model.features=4"):
    checkpointing.write_config(str(tmp_path), config, fields)
  config.model.features = 4
  config.method = "other"
  with pytest.raises(checkpointing.CheckpointError, match="method='clade'"):
    checkpointing.write_config(str(tmp_path), config, fields)


def test_bad_config_values_stop_before_any_work(tmp_path):
  config = tiny_config(tmp_path / "no_such_data")  # Would fail later, when loading.
  config.train.batch_size = -3
  config.loss.gan = "wgan"
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert info.value.problems == ["train.batch_size=-3 is out of range: must be >= 1",
                                 "loss.gan='wgan' is not one of log, lsgan"]
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("override, message", [
    ("--config.train.batchsize=3",
     "error: unknown config field train.batchsize; did you mean train.batch_size?"),
    ("--config.train.batch_size=-3", "error: train.batch_size=-3 is out of range: must be >= 1"),
])
def test_train_cli_reports_bad_config_fields_in_one_line(tmp_path, override, message):
  import subprocess
  import sys
  result = subprocess.run(
      [sys.executable, "train.py", "--config=configs/mri.py", override,
       f"--workdir={tmp_path / 'run'}"],
      cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True,
      timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [message]


@pytest.mark.parametrize("make_root, message", [
    (lambda tmp: tmp / "missing", "no NIfTI volumes"),
    (lambda tmp: (tmp / "bad.nii.gz").write_bytes(b"garbage" * 50) and tmp / "bad.nii.gz",
     "bad.nii.gz: cannot read NIfTI"),
])
def test_train_cli_reports_bad_data_in_one_line(tmp_path, make_root, message):
  import subprocess
  import sys
  root = make_root(tmp_path)
  result = subprocess.run(
      [sys.executable, "train.py", "--config=configs/mri.py", f"--config.data.root={root}",
       f"--workdir={tmp_path / 'run'}"],
      cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True,
      timeout=120)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last
  assert "Traceback" not in result.stderr
