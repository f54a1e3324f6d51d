"""The persistent compilation cache (clade_jax.compilation_cache, the CLIs' --jit_cache)."""

import jax
import numpy as np
import pytest

from clade_jax import compilation_cache, train
from tests.test_train import tiny_config


@pytest.fixture
def jax_cache_settings():
  """Restores the cache settings a test changes (conftest's cache stays in use)."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  saved = {name: getattr(jax.config, name) for name in names}
  yield
  for name, value in saved.items():
    jax.config.update(name, value)


def test_enable_turns_the_cache_on_in_the_directory_it_is_given(tmp_path, jax_cache_settings):
  directory = str(tmp_path / "cache")
  assert compilation_cache.enable(directory) == directory
  assert jax.config.jax_compilation_cache_dir == directory
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


@pytest.mark.parametrize("directory", ["none", "None", ""])
def test_none_turns_the_cache_off(directory, jax_cache_settings):
  before = jax.config.jax_compilation_cache_dir
  assert compilation_cache.enable(directory) is None
  assert jax.config.jax_compilation_cache_dir == before


def test_a_directory_that_cannot_be_created_leaves_the_cache_off(tmp_path, jax_cache_settings):
  blocker = tmp_path / "a file"
  blocker.write_text("")
  before = jax.config.jax_compilation_cache_dir
  assert compilation_cache.enable(str(blocker / "cache")) is None
  assert jax.config.jax_compilation_cache_dir == before


def test_the_default_directory_follows_xdg_cache_home(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compilation_cache.default_directory() == str(tmp_path / "clade_jax" / "jax")


def test_a_rerun_loads_its_compiled_programs_and_trains_identically(data_root, tmp_path,
                                                                    jax_cache_settings):
  """A second run of the same config (a re-run or a resume's start) takes the driver's
  compiled programs from the persistent cache (conftest's) and trains to the same
  params, bit for bit."""
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # Cache every program.
  config = tiny_config(data_root)
  config.train.num_steps = 2
  first = train.train_and_evaluate(config, str(tmp_path / "first"))
  events = []

  def listener(event, **kwargs):
    del kwargs
    events.append(event)
  jax.monitoring.register_event_listener(listener)
  try:
    second = train.train_and_evaluate(config, str(tmp_path / "second"))
  finally:
    jax.monitoring.unregister_event_listener(listener)
  assert "/jax/compilation_cache/cache_hits" in events
  assert "/jax/compilation_cache/cache_misses" not in events  # Nothing compiled anew.
  jax.tree.map(np.testing.assert_array_equal, first.params, second.params)
  jax.tree.map(np.testing.assert_array_equal, first.opt_state, second.opt_state)
