"""CLADE's options beyond the paper: the generators' moving average, the residual
generator in the method, test-time flips; the paper's settings unchanged by them."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clade_jax import checkpointing, inference, train
from clade_jax import train_state as train_state_lib
from clade_jax.methods import clade
from clade_jax.train_state import EmaTrainState, TrainState
from tests import phantoms
from tests.test_train import tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  phantoms.thick_slice_volume(root / "a.nii.gz", seed=0)
  return root


def _init(config):
  return jax.jit(lambda key: clade.init_state(config, key))(train.init_key(0))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 1)), jnp.float32) for k in "xy"}


def test_the_papers_config_keeps_no_average(data_root):
  config = tiny_config(data_root)
  state = jax.eval_shape(lambda key: clade.init_state(config, key), train.init_key(0))
  assert type(state) is TrainState
  assert train_state_lib.inference_params(state) == state.params


def test_ema_decay_warms_up_then_holds():
  np.testing.assert_allclose(train_state_lib.ema_decay_at(0.999, 0), 0.1)
  np.testing.assert_allclose(train_state_lib.ema_decay_at(0.999, 90), 91 / 100)
  np.testing.assert_allclose(train_state_lib.ema_decay_at(0.9, 10_000), 0.9)


def test_train_step_averages_the_generators(data_root):
  config = tiny_config(data_root)
  config.train.ema_decay = 0.5
  state = _init(config)
  assert isinstance(state, EmaTrainState) and set(state.ema_params) == {"G_X", "G_Y"}
  jax.tree.map(np.testing.assert_array_equal, state.ema_params["G_X"], state.params["G_X"])
  step = jax.jit(clade.make_train_step(config))
  first, _ = step(state, _batch(0))
  second, _ = step(first, _batch(1))
  # Update 0 has decay min(0.5, 1/10), update 1 min(0.5, 2/11): by hand.
  expected = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, state.ema_params["G_X"],
                          first.params["G_X"])
  expected = jax.tree.map(lambda e, p: (2 / 11) * e + (9 / 11) * p, expected,
                          second.params["G_X"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               second.ema_params["G_X"], expected)
  # The average lags the raw weights, and the discriminators are not averaged.
  assert not np.allclose(second.ema_params["G_X"]["Conv_0"]["kernel"],
                         second.params["G_X"]["Conv_0"]["kernel"])
  merged = train_state_lib.inference_params(second)
  assert merged["G_X"] is second.ema_params["G_X"] and merged["D_X"] is second.params["D_X"]


@pytest.mark.slow
def test_average_is_checkpointed_resumed_and_used_by_inference(data_root, tmp_path):
  config = tiny_config(data_root)
  config.train.ema_decay = 0.9
  config.train.num_steps = 4
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_steps = 4
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, resumed.ema_params, straight.ema_params)

  params, _, step = inference.load_params(str(tmp_path / "resumed"))
  assert step == 4
  jax.tree.map(close, params["G_X"], resumed.ema_params["G_X"])
  jax.tree.map(close, params["D_Y"], resumed.params["D_Y"])
  assert not np.allclose(params["G_X"]["Conv_0"]["kernel"],
                         resumed.params["G_X"]["Conv_0"]["kernel"])


def test_switching_the_average_on_in_a_run_without_it_is_refused(data_root, tmp_path):
  config = tiny_config(data_root)
  fields = clade.architecture_fields
  checkpointing.write_config(str(tmp_path), config, fields)
  config.train.ema_decay = 0.99
  with pytest.raises(checkpointing.CheckpointError, match="ema_decay=0.0"):
    checkpointing.write_config(str(tmp_path), config, fields)


def test_a_run_from_before_the_options_still_resumes(data_root, tmp_path):
  config = tiny_config(data_root)
  old = config.copy_and_resolve_references()
  del old.model["residual"], old.train["ema_decay"]
  checkpointing.write_config(str(tmp_path), old, ())
  checkpointing.write_config(str(tmp_path), config, clade.architecture_fields)
  checkpointing.write_config(str(tmp_path), old, ())
  config.model.residual = True
  with pytest.raises(checkpointing.CheckpointError, match="residual=None"):
    checkpointing.write_config(str(tmp_path), config, clade.architecture_fields)


def test_residual_clade_starts_at_the_identity_and_flips_average_by_hand(data_root):
  config = tiny_config(data_root)
  config.model.residual = True
  params = _init(config).params
  x = _batch()["x"]
  out = clade.generator_apply_fn(config.model, tta=True)(params["G_X"], x)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
  # G_Y, the degrader, starts from its random init as in the paper, not at the identity.
  g_y = clade.create_generators(config.model)["G_Y"]
  assert not g_y.residual
  assert np.abs(np.asarray(g_y.apply({"params": params["G_Y"]}, x)) - x).mean() > 0.1

  config.model.residual = False
  params = _init(config).params["G_X"]
  plain = clade.generator_apply_fn(config.model)
  flipped = clade.generator_apply_fn(config.model, tta=True)(params, x)
  by_hand = sum(jnp.flip(plain(params, jnp.flip(x, a)), a) if a else plain(params, x)
                for a in ((), (1,), (2,), (1, 2))) / 4
  np.testing.assert_allclose(flipped, by_hand, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(flipped - plain(params, x))).max() > 1e-4


def test_the_paired_loss_is_the_l1_of_g_x_on_simulated_pairs(data_root):
  config = tiny_config(data_root)
  config.loss.degradation = 3.0
  generator, discriminator = clade.create_models(config.model)
  params = _init(config).params
  batch = _batch()
  rng = np.random.default_rng(5)
  batch.update({k: jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 1)), jnp.float32)
                for k in ("y_lr", "y_hr")})
  losses = jax.jit(lambda p: clade.compute_losses(p, batch, generator, discriminator,
                                                  config.loss)[1])(params)
  g_x = generator.apply({"params": params["G_X"]}, batch["y_lr"])
  np.testing.assert_allclose(losses["degradation"], np.mean(np.abs(g_x - batch["y_hr"])),
                             rtol=1e-5)
  expected = (losses["adversarial"] + losses["cycle"] + losses["identity"]
              + 5.0 * losses["gmap"] + 3.0 * losses["degradation"])
  np.testing.assert_allclose(losses["generator"], expected, rtol=1e-5)
