"""The README as a new user reads it, and the documentation site built from docs/.

Why this file exists: the README is the front door (short: what it is, the two commands, a tour,
links), the rest lives in docs/ by topic and builds as a site with `mkdocs build --strict`, so a
broken link, a page missing from the navigation or an include of a file that moved fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_the_readme_says_how_to_get_the_command_and_uses_it_one_way() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in readme
    assert not re.search(r"\.venv/bin/(hybrid-serve|modal|python)\b", readme), "one way: the activated environment"
    assert readme.index("source .venv/bin/activate") < readme.index("hybrid-serve experiments")  # before any use


def test_the_readme_fits_on_a_few_screens_and_links_every_topic() -> None:
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert readme.count("\n## ") <= 8  # what it is, two commands, the tour, configuration, links
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    pages = {p.name for p in (REPO_ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"topics the README does not link: {sorted(pages - linked)}"


def mkdocs_build(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the project at `project`, as `make docs` runs it."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    command = [str(mkdocs)] if mkdocs.exists() else [sys.executable, "-m", "mkdocs"]
    return subprocess.run([*command, "build", "--strict", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


def test_the_documentation_site_builds_strictly(tmp_path: Path) -> None:
    built = mkdocs_build(REPO_ROOT, "--site-dir", str(tmp_path / "site"))
    assert built.returncode == 0, built.stdout + built.stderr
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "A five-minute tour" in home and 'href="experiments/"' in home  # the README, its links rewritten
    figures = (tmp_path / "site" / "benchmarks" / "index.html").read_text(encoding="utf-8")
    first_row = next(line for line in (REPO_ROOT / "benchmarks/results/summary.md").read_text().splitlines()
                     if line.startswith("| ") and "---" not in line and "benchmark |" not in line)
    assert first_row.split("|")[2].strip() in figures  # the results file's figures, included


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The check can fail: the same configuration over a page with a dead link is refused."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [nowhere](nowhere.md).\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: probe\nstrict: true\ntheme:\n  name: material\n"
                                         "validation:\n  links:\n    not_found: warn\n")
    built = mkdocs_build(tmp_path)
    assert built.returncode != 0 and "nowhere.md" in built.stdout + built.stderr


def test_every_file_the_pages_name_exists() -> None:
    """A page that names a test, module or benchmark file names one that is there (stale names were found)."""
    named = re.compile(r"`((?:core|backends|tests|benchmarks|docs|data|dashboards)/[\w./-]+\.(?:py|md|toml|json|csv|png))`")
    missing = sorted({(page.name, path) for page in [README, *(REPO_ROOT / "docs").glob("*.md")]
                      for path in named.findall(page.read_text(encoding="utf-8"))
                      if not (REPO_ROOT / path).exists() and not path.startswith("benchmarks/results/")})  # outputs
    assert not missing, missing
