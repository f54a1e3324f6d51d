"""The documentation holds together: every relative link resolves, the README stays short.

Links are read as GitHub renders them: inline links and images `[text](target)` and
reference definitions `[name]: target`, outside code blocks and code spans; `#anchor`
fragments into Markdown files must name a heading there, slugged as GitHub does.
"""

import pathlib
import re
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The Markdown a reader follows: the README, the guides, the measured results. Globbed,
# not `git ls-files`, because CI runs the tests in a copy of the tree without .git.
DOC_GLOBS = ("README.md", "docs/**/*.md", "experiments/**/*.md", "benchmarks/**/*.md")
README_MAX_LINES = 170

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str, drop_code_spans: bool = True):
  """(line number, line) outside fenced and indented code blocks."""
  fence = None
  previous_blank = True
  in_indented = False
  for number, line in enumerate(text.splitlines(), 1):
    match = _FENCE.match(line)
    if fence:
      if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
        fence = None
      continue
    if match:
      fence = match.group(1)
      continue
    blank = not line.strip()
    # An indented code block starts after a blank line; a list item's indented
    # continuation does not (it follows text), which is close enough for our files.
    in_indented = (line.startswith("    ") or line.startswith("\t")) and (
        previous_blank or in_indented) and not blank
    previous_blank = blank
    if in_indented:
      continue
    yield number, _CODE_SPAN.sub("", line) if drop_code_spans else line


def github_slug(heading: str) -> str:
  """The anchor GitHub gives a heading: inline markup dropped, lowercased, punctuation
  other than '-' and '_' removed, spaces to '-'."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # Links keep their text.
  text = re.sub(r"<[^>]+>", "", text)  # HTML tags.
  text = text.replace("`", "").replace("*", "")
  text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_, not snake_case.
  text = text.strip().lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
  """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
  seen: dict[str, int] = {}
  result = set()
  for _, line in _prose_lines(path.read_text(encoding="utf-8"), drop_code_spans=False):
    match = _HEADING.match(line)
    if match:
      slug = github_slug(match.group(2))
      count = seen.get(slug, 0)
      seen[slug] = count + 1
      result.add(slug if count == 0 else f"{slug}-{count}")
  return result


def links(path: pathlib.Path):
  """(line number, target) of every link in a Markdown file."""
  for number, line in _prose_lines(path.read_text(encoding="utf-8")):
    for match in _INLINE_LINK.finditer(line):
      yield number, match.group(1)
    match = _REFERENCE.match(line)
    if match:
      yield number, match.group(1)


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
  """'file:line: target (why)' for each relative link of `path` that does not resolve."""
  problems = []
  for number, target in links(path):
    parsed = urllib.parse.urlparse(target)
    if parsed.scheme or target.startswith("//"):
      continue  # http(s), mailto: not checked offline.
    file_part = urllib.parse.unquote(parsed.path)
    resolved = (path.parent / file_part).resolve() if file_part else path
    where = f"{path.relative_to(root)}:{number}: {target}"
    if not resolved.exists():
      problems.append(f"{where} (no such file)")
      continue
    if file_part and root not in resolved.parents and resolved != root:
      problems.append(f"{where} (outside the repository)")
      continue
    if parsed.fragment and resolved.suffix == ".md":
      if parsed.fragment not in anchors(resolved):
        problems.append(f"{where} (no heading with this anchor)")
  return problems


def markdown_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
  files = {p for pattern in DOC_GLOBS for p in root.glob(pattern)}
  return sorted(p for p in files if ".ipynb_checkpoints" not in p.parts)


def test_every_relative_link_in_the_docs_resolves():
  files = markdown_files()
  assert ROOT / "README.md" in files and any(p.parts[-2] == "docs" for p in files)
  problems = [problem for path in files for problem in broken_links(path)]
  assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_finds_what_is_broken(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "guide.md").write_text(
      "# The guide\n\n## Step 1: install (`pip`)\n\n## Step 1: install (`pip`)\n\n"
      "## snake_case and _emphasis_\n")
  (tmp_path / "README.md").write_text(
      "# Top\n\n"
      "[ok](docs/guide.md) [ok](docs/guide.md#step-1-install-pip) "
      "[ok](docs/guide.md#step-1-install-pip-1) [ok](docs/guide.md#snake_case-and-emphasis) "
      "[ok](#top) [ok](https://example.org/missing) ![ok](docs/)\n"
      "[bad](docs/missing.md) [bad](docs/guide.md#no-such-step) [bad](#nowhere)\n"
      "`[not a link](nowhere.md)`\n\n"
      "    [code, not a link](nowhere.md)\n\n"
      "```\n[code, not a link](nowhere.md)\n```\n\n"
      "[ref]: docs/absent.md\n")
  problems = broken_links(tmp_path / "README.md", root=tmp_path)
  assert [p.split(": ", 1)[1] for p in problems] == [
      "docs/missing.md (no such file)",
      "docs/guide.md#no-such-step (no heading with this anchor)",
      "#nowhere (no heading with this anchor)",
      "docs/absent.md (no such file)",
  ]


@pytest.mark.parametrize("heading, slug", [
    ("Many devices, many hosts", "many-devices-many-hosts"),
    ("Autoencoder latent interpolation (Sander et al.)",
     "autoencoder-latent-interpolation-sander-et-al"),
    ("`clade-jax sr`: from scans to volumes", "clade-jax-sr-from-scans-to-volumes"),
    ("CLADE+: what the ground truth changed", "clade-what-the-ground-truth-changed"),
    ("Data consistency and `data.slice_profile`", "data-consistency-and-dataslice_profile"),
    ("Re-run start-up, 2026-11-23 (evening)", "re-run-start-up-2026-11-23-evening"),
])
def test_github_slugs(heading, slug):
  assert github_slug(heading) == slug


def test_readme_is_short_and_starts_with_the_two_set_up_commands():
  lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
  assert len(lines) <= README_MAX_LINES, (
      f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} and move detail "
      "to docs/")
  commands = [(i, line) for i, line in enumerate(lines) if line.startswith("    ")]
  (demo_at, demo), (tests_at, tests) = commands[:2]
  assert demo_at < tests_at < 10, "the README's first lines are the two set-up commands"
  assert demo.startswith("    python3 -m venv .venv") and "python train.py --config=configs/demo.py" in demo
  assert tests.startswith("    python3 -m venv .venv") and tests.endswith("python -m pytest -q")
