"""A method defined entirely here trains and super-resolves through the shared code.

The "toy" method scales the cubic-spline input by one learned number. It proves the
method contract (clade_jax/methods/__init__.py): registering it and giving it its own
config (the shared groups of clade_jax/configs/base.py plus its one field) is all it
takes for the driver (config checks, checkpoint, resume, samples, held-out figure) and
for inference. docs/adding-a-method.md walks through it.
"""

import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import nibabel as nib
import numpy as np
import optax
import pytest

from clade_jax import checkpointing, config_validation, inference, methods, metric_writer
from clade_jax import train, volume_srr
from clade_jax.config_validation import ConfigError, Range
from clade_jax.configs import base
from clade_jax.data import intensity
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib
from clade_jax.models import convolution
from clade_jax.train_state import TrainState
from configs import ae_interp, mri, smore
from tests import phantoms

TARGET = 0.5  # The toy learns to scale its input by this.


def get_toy_config():
  """The toy's own config: the shared groups and the one field of its own."""
  config = base.get_config("toy")
  config.data.patch_size = 8  # A shared field the toy's examples read.
  config.model = ml_collections.ConfigDict()
  config.model.initial_scale = 1.0  # The scale before training: the cubic spline itself.
  config.eval.mode = "full"  # It scales whole slices; no sliding window.
  return config


class _Source:
  """Random crops of low-resolution-plane slices; example i depends on i only."""

  def __init__(self, config, volumes):
    self.size = config.data.patch_size
    self.stacks = [volume_lib.plane_slices(v.normalised_isotropic, v.lr_axis) for v in volumes]

  def __len__(self):
    return 16

  def sample(self, record, index):
    rng = np.random.default_rng(index)
    stack, p = self.stacks[record % len(self.stacks)], self.size
    s = rng.integers(len(stack))
    r, c = rng.integers(0, stack.shape[1] - p), rng.integers(0, stack.shape[2] - p)
    return {"x": stack[s, r:r + p, c:c + p, None].astype(np.float32)}


def _init_state(config, rng):
  del rng
  params = {"net": {"scale": jnp.full((), config.model.initial_scale, jnp.float32)}}
  return TrainState(jnp.zeros((), jnp.int32), params,
                    optax.sgd(config.train.learning_rate).init(params))


def _make_train_step(config):
  optimizer = optax.sgd(config.train.learning_rate)

  def step(state, batch):
    def loss(params):
      x = batch["x"]
      return jnp.mean(jnp.square(params["net"]["scale"] * x - TARGET * x))
    value, grads = jax.value_and_grad(loss)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state)
    return (TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state),
            {"loss/l2": value})

  return step


def _super_resolve(params, config, prepared, options):
  scale = float(params["net"]["scale"])
  return volume_srr.reconstruct_planes(prepared, lambda s, progress: s * scale, options)


TOY = types.SimpleNamespace(
    describe=lambda config: "Toy",
    architecture_fields=(),  # One scalar, whatever the config.
    make_source=lambda config, volumes, holdout: _Source(config, volumes),
    init_state=_init_state,
    make_train_step=_make_train_step,
    make_sample_fn=lambda config: lambda params, batch: {
        "x": batch["x"], "scaled": params["net"]["scale"] * batch["x"]},
    super_resolve=_super_resolve,
    config_ranges={"model.initial_scale": Range(0, lo_exclusive=True)},
)


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
  methods.register("toy", TOY)
  root = tmp_path_factory.mktemp("data")
  phantoms.thick_slice_volume(root / "a.nii.gz", seed=0)
  config = get_toy_config()
  config.data.root = str(root)
  config.data.num_threads = 1
  config.train.batch_size = 4
  config.train.learning_rate = 0.5
  config.train.num_steps = 4
  config.train.log_every = 1
  config.train.sample_every = 2
  config.ckpt.every = 2
  return config


def test_a_method_registered_in_a_test_trains_resumes_and_super_resolves(toy_config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  toy_config.train.num_steps = 6
  final = train.train_and_evaluate(toy_config, straight)
  toy_config.train.num_steps = 4
  train.train_and_evaluate(toy_config, resumed)
  toy_config.train.num_steps = 6
  again = train.train_and_evaluate(toy_config, resumed)

  assert int(again.step) == 6
  np.testing.assert_allclose(again.params["net"]["scale"], final.params["net"]["scale"],
                             rtol=1e-6)
  scale = float(again.params["net"]["scale"])
  assert abs(scale - TARGET) < 0.5 * abs(1.0 - TARGET)  # It learned something.
  assert [m["step"] for m in metric_writer.read_metrics(resumed)] == [1, 2, 3, 4, 5, 6]
  with open(os.path.join(resumed, "config.json")) as f:
    assert json.load(f)["method"] == "toy"
  for name in ("holdout_sr.png", "samples/step_0000006.png"):
    assert os.path.exists(os.path.join(resumed, name)), name

  # Shared inference: the output is the prepared input scaled in normalised units.
  scan = phantoms.thick_slice_volume(tmp_path / "scan.nii.gz", seed=3)
  output = str(tmp_path / "out.nii.gz")
  result = inference.run(resumed, scan, output, options=volume_srr.SROptions(progress=False),
                         figure=True)
  assert result.method == "Toy" and result.step == 6
  source = volume_lib.load_volume(scan)
  prepared = preprocess.prepare_input(source.data, source.affine, toy_config.data)
  # Inside the window the method's output; at and beyond its edges the input
  # (clade_jax/data/intensity.py, checked in tests/test_intensity.py).
  norm = prepared.normalizer
  expected = norm.inverse(norm.forward(prepared.isotropic) * scale)
  inside = np.abs(norm.scale(prepared.isotropic)) <= intensity.RAMP_START
  beyond = np.abs(norm.scale(prepared.isotropic)) >= intensity.RAMP_STOP
  assert inside.mean() > 0.2 and beyond.any()
  written = np.asarray(nib.load(output).dataobj)
  np.testing.assert_allclose(written[inside], expected[inside],
                             rtol=1e-6, atol=1e-5 * (norm.hi - norm.lo))
  np.testing.assert_array_equal(
      written[beyond], np.clip(prepared.isotropic, *prepared.acquired_range)[beyond])
  assert os.path.exists(result.figure)


def test_the_toy_config_is_the_shared_groups_and_its_own_field_checked_before_work(
    toy_config, tmp_path):
  config = get_toy_config()
  assert set(config.keys()) == {"method", "seed", "data", "model", "train", "ckpt", "eval"}
  assert config.model.to_dict() == {"initial_scale": 1.0}  # Nothing of CLADE's.
  assert "hr_slices" not in config.data and "stride" not in config.eval
  config_validation.validate(toy_config, config, ranges=TOY.config_ranges)

  bad = ml_collections.ConfigDict(toy_config.to_dict())
  bad.train.log_every = 0  # A shared field: the shared table.
  bad.model.initial_scale = 0.0  # The toy's own: its config_ranges.
  with pytest.raises(ConfigError) as err:
    train.train_and_evaluate(bad, str(tmp_path / "run"))
  assert err.value.problems == ["train.log_every=0 is out of range: must be >= 1",
                                "model.initial_scale=0.0 is out of range: must be > 0"]
  assert not os.path.exists(tmp_path / "run")


def test_a_checkpoint_of_another_method_is_refused(toy_config, tmp_path):
  checkpointing.write_config(str(tmp_path), toy_config, TOY.architecture_fields)
  clade_config = mri.get_config()
  with pytest.raises(checkpointing.CheckpointError, match="method='toy' but the config says 'clade'"):
    checkpointing.write_config(str(tmp_path), clade_config)


def test_unknown_method_lists_the_available_ones():
  with pytest.raises(methods.UnknownMethodError, match=r"config.method='nope' .*clade"):
    methods.get("nope")
  assert "clade" in methods.available()


@pytest.mark.parametrize("config_module, overrides, batch_keys", [
    (mri, {"features": 4, "num_blocks": 1, "disc_features": 4, "disc_layers": 2}, ("x", "y")),
    (smore, {"features": 4, "num_blocks": 1}, ("x", "y")),
    (ae_interp, {"features": 4, "num_blocks": 2}, ("image",)),
], ids=["clade", "smore", "ae_interp"])
def test_every_method_trains_with_the_configs_convolution_formulation(
    config_module, overrides, batch_keys, monkeypatch):
  # The methods hand model.conv_impl to their networks: every convolution of the train
  # step is then traced in that formulation (im2col is no config's default).
  traced = set()
  for name, impl_arg in (("_conv", 4), ("_conv_transpose", 3)):
    def spy(*args, _kernel=getattr(convolution, name), _i=impl_arg):
      traced.add(args[_i])
      return _kernel(*args)
    monkeypatch.setattr(convolution, name, spy)
  config = config_module.get_config("small")
  config.model.update(overrides)
  config.model.conv_impl = "im2col"
  method = methods.of(config)
  p = config.data.patch_size
  batch = {k: jax.ShapeDtypeStruct((2, p, p, 1), jnp.float32) for k in batch_keys}
  state = jax.eval_shape(lambda: method.init_state(config, train.init_key(0)))
  jax.eval_shape(method.make_train_step(config), state, batch)
  assert traced == {"im2col"}
