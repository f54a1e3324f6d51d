"""No import cycles: every module of the package imports on its own, in any order.

The static check reads every import statement, function-level ones included (they
hide a cycle from a plain import but not from a reader), and asserts the graph of
clade_jax modules is acyclic. The dynamic check imports each module in a fresh copy of
the package inside one subprocess.
"""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clade_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, modules) -> set[str]:
  """clade_jax modules `path` imports anywhere in its body."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import mod` needs pkg.mod; `from mod import name` needs mod.
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
               else node.module for a in node.names]
    else:
      continue
    found |= {n for n in names if n in modules}
  return found


def test_import_graph_has_no_cycle():
  modules = _modules()
  graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycle = stack[stack.index(nxt):] + [nxt]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])


def test_every_module_imports_on_its_own():
  names = sorted(_modules())
  script = (
      "import importlib, sys\n"
      f"for name in {names!r}:\n"
      "  for loaded in [m for m in sys.modules if m == 'clade_jax' or m.startswith('clade_jax.')]:\n"
      "    del sys.modules[loaded]\n"
      "  importlib.import_module(name)\n"
      "print('ok', len(" + repr(names) + "))\n")
  env = {"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
         "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == f"ok {len(names)}"
