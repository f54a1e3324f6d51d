"""Saved traces (clade_jax.trace_cache): reused only when nothing that shapes them changed."""

import contextvars
import os
import threading

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from clade_jax import compilation_cache, train, trace_cache
from tests.test_train import tiny_config


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict


def shardings():
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def counting_step():
  """A train-step-like function that counts how often Python traces it."""
  traces = []

  def step(state, batch):
    traces.append(1)
    loss = jnp.mean(jnp.square(batch["x"] @ state.params["w"]))
    new = State(step=state.step + 1, params={"w": state.params["w"] * 0.5})
    return new, {"loss": loss}
  return step, traces


def arguments(replicated, batch_sharding):
  state = State(step=jnp.zeros((), jnp.int32), params={"w": jnp.arange(6.0).reshape(3, 2)})
  batch = {"x": jnp.arange(12.0).reshape(4, 3)}
  return jax.device_put(state, replicated), jax.device_put(batch, batch_sharding)


def saved_traces(directory):
  return sorted(name for name in os.listdir(directory / "traces") if name.endswith(".jaxexport"))


def program(fun, directory, key="config"):
  replicated, batch_sharding = shardings()
  return trace_cache.Program(fun, name="step", key=key, directory=directory,
                             in_shardings=(replicated, batch_sharding),
                             out_sharding=replicated, donate_argnums=(0,))


def test_a_saved_trace_is_loaded_instead_of_tracing_again(tmp_path):
  step, traces = counting_step()
  state, batch = arguments(*shardings())
  expected_state, expected_metrics = jax.jit(step)(state, batch)
  traces.clear()

  out_state, metrics = program(step, str(tmp_path))(*arguments(*shardings()))
  assert len(traces) == 1
  (saved,) = saved_traces(tmp_path)
  assert saved.startswith("step-")
  again = program(step, str(tmp_path))  # A new run: nothing in memory.
  out_again, metrics_again = again(*arguments(*shardings()))
  assert len(traces) == 1  # Loaded from disk, not traced.

  for result_state, result_metrics in ((out_state, metrics), (out_again, metrics_again)):
    assert isinstance(result_state, State)
    np.testing.assert_array_equal(result_state.params["w"], expected_state.params["w"])
    assert int(result_state.step) == 1
    np.testing.assert_allclose(result_metrics["loss"], expected_metrics["loss"], rtol=1e-6)
  # The donated state was given to the outputs.
  donated, batch = arguments(*shardings())
  again(donated, batch)
  assert donated.params["w"].is_deleted()


def test_another_key_or_argument_shape_traces_again(tmp_path):
  step, traces = counting_step()
  program(step, str(tmp_path))(*arguments(*shardings()))
  program(step, str(tmp_path), key="another config")(*arguments(*shardings()))
  assert len(traces) == 2
  replicated, batch_sharding = shardings()
  state, _ = arguments(replicated, batch_sharding)
  wider = jax.device_put({"x": jnp.ones((8, 3))}, batch_sharding)
  _, metrics = program(step, str(tmp_path))(state, wider)
  assert len(traces) == 3
  np.testing.assert_allclose(metrics["loss"], np.mean(np.square(np.ones((8, 3)) @ np.arange(
      6.0).reshape(3, 2))), rtol=1e-6)
  assert len(saved_traces(tmp_path)) == 3


def test_an_unreadable_trace_is_traced_again(tmp_path):
  step, traces = counting_step()
  program(step, str(tmp_path))(*arguments(*shardings()))
  (path,) = (tmp_path / "traces").glob("*.jaxexport")
  path.write_bytes(b"not a trace")
  _, metrics = program(step, str(tmp_path))(*arguments(*shardings()))
  assert len(traces) == 2 and np.isfinite(metrics["loss"])
  assert path.read_bytes() != b"not a trace"  # Replaced by a good one.


def test_without_a_directory_it_is_plain_jit_and_writes_nothing(tmp_path):
  step, traces = counting_step()
  run = program(step, None)
  state, batch = arguments(*shardings())
  shapes = run.out_shapes(state, batch)
  out_state, _ = run(state, batch)
  assert int(out_state.step) == 1
  assert shapes[1]["loss"].shape == () and shapes[0].params["w"].shape == (3, 2)
  assert not os.listdir(tmp_path)


def test_out_shapes_come_from_the_saved_trace(tmp_path):
  step, traces = counting_step()
  state, batch = arguments(*shardings())
  program(step, str(tmp_path))(state, batch)
  state, batch = arguments(*shardings())
  shapes = program(step, str(tmp_path)).out_shapes(state, batch)
  assert len(traces) == 1
  expected = jax.eval_shape(step, state, batch)
  assert jax.tree.structure(shapes) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(shapes), jax.tree.leaves(expected)):
    assert (got.shape, got.dtype) == (want.shape, want.dtype)


def test_compiling_in_a_thread_serves_the_later_call(tmp_path):
  """The driver compiles the step in a thread while it starts up; the call reuses it,
  and the thread traces in the caller's context (the convolution formulation)."""
  formulation = contextvars.ContextVar("formulation", default="default")
  seen = []

  def step(state, batch):
    seen.append(formulation.get())
    return state, {"loss": jnp.sum(batch["x"])}

  run = program(step, str(tmp_path))
  replicated, batch_sharding = shardings()
  state, batch = arguments(replicated, batch_sharding)
  specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                       (state, batch))
  formulation.set("the caller's")
  thread = threading.Thread(target=contextvars.copy_context().run, args=(run.compile, *specs))
  thread.start()
  thread.join()
  run(state, batch)
  assert seen == ["the caller's"]  # One trace, in the thread, none at the call.


def test_code_fingerprint_covers_every_clade_jax_module():
  fingerprint = trace_cache.code_fingerprint()
  assert len(fingerprint) == 64
  trace_cache.code_fingerprint.cache_clear()
  assert trace_cache.code_fingerprint() == fingerprint


def test_training_twice_loads_its_traces_and_gives_the_same_params(data_root, tmp_path,
                                                                   monkeypatch):
  """The driver's programs (init, step, samples) go through the trace cache when the
  command line turned it on; a second run loads them and trains identically."""
  monkeypatch.setattr(compilation_cache, "_traces", str(tmp_path / "cache"))
  config = tiny_config(data_root)
  config.train.num_steps = 2
  first = train.train_and_evaluate(config, str(tmp_path / "first"))
  saved = [name.split("-")[0] for name in saved_traces(tmp_path / "cache")]
  assert saved == ["init_state", "sample", "train_step"]
  second = train.train_and_evaluate(config, str(tmp_path / "second"))
  assert len(saved_traces(tmp_path / "cache")) == 3  # Nothing traced anew.
  jax.tree.map(np.testing.assert_array_equal, first.params, second.params)
  monkeypatch.setattr(compilation_cache, "_traces", None)
  plain = train.train_and_evaluate(config, str(tmp_path / "plain"))
  jax.tree.map(np.testing.assert_array_equal, first.params, plain.params)


def test_last_arguments_let_a_rerun_compile_before_it_has_its_data(tmp_path):
  step, traces = counting_step()
  assert program(step, str(tmp_path)).last_arguments() is None  # Never compiled.
  assert program(step, None).last_arguments() is None  # No cache.
  program(step, str(tmp_path))(*arguments(*shardings()))

  state, batch = arguments(*shardings())
  rerun = program(step, str(tmp_path))
  guessed = rerun.last_arguments()
  assert jax.tree.structure(guessed) == jax.tree.structure((state, batch))
  for spec, arg in zip(jax.tree.leaves(guessed), jax.tree.leaves((state, batch))):
    assert (spec.shape, spec.dtype, spec.sharding) == (arg.shape, arg.dtype, arg.sharding)
  rerun.compile(*guessed)
  rerun(state, batch)
  assert len(rerun._compiled) == 1  # The guess served the real call.
  assert len(traces) == 1
  assert program(step, str(tmp_path), key="another config").last_arguments() is None
