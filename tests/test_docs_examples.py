"""Every shell example in the README and docs/ runs here, or says why it cannot.

Why this file exists: a stale example (a renamed flag, a sample output that no longer matches) is the
first thing a new user trips over. Each ```bash / ```console block is preceded by one marker:

- `<!-- docs-test: run -->`: run as written (bash, `set -eu`) in a scratch folder that
  holds the repository's files by link, so it may create files without touching the checkout;
- `<!-- docs-test: server -->`: the same, while `hybrid-serve serve` (in-process, the shipped demo
  registry plus a text-generation experiment `my-generator`) answers on the address the example names (`127.0.0.1:8000`, rewritten to a free port);
- `<!-- docs-test: skip: REASON -->`: not runnable here (a Modal account, a GPU, a cluster), with why.

In a ```console block each `$ command` line runs and the lines after it, up to the next `$`, are its
expected output (stdout and stderr); a line `...` stands for any number of lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from core.testing.process import Served, served
from tests.conftest import REPO_ROOT
from tests.tiny_models import build_feature_extraction, build_text_generation

DOCUMENTED_ADDRESS = "127.0.0.1:8000"
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
MARKER = re.compile(r"<!-- docs-test: (run|server|skip: .+?) -->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    language: str
    marker: str | None  # "run", "server", "skip: …" or None (unmarked: a defect)
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def examples_in(path: Path) -> Iterator[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if fence.group(1) in SHELL_LANGUAGES:
            before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marked = MARKER.fullmatch(before.strip())
            yield Example(path, index + 1, fence.group(1), marked.group(1) if marked else None,
                          "\n".join(lines[index + 1:end]))
        index = end + 1


EXAMPLES = [example for path in documents() for example in examples_in(path)]
RUNNABLE = [e for e in EXAMPLES if e.marker in ("run", "server")]


def test_every_shell_example_is_marked_and_most_of_them_run() -> None:
    unmarked = [e.id for e in EXAMPLES if e.marker is None]
    assert not unmarked, f"shell examples without a docs-test marker (run, server or skip: why): {unmarked}"
    assert len(EXAMPLES) >= 15 and len(RUNNABLE) >= len(EXAMPLES) // 2, [(e.id, e.marker) for e in EXAMPLES]


def test_the_collector_reads_markers_languages_and_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- docs-test: skip: needs Modal -->\n```bash\nmodal deploy x\n```\n\n"
                    "```python\nprint()\n```\n```console\n$ true\n```\n")
    found = list(examples_in(page))
    assert [(e.line, e.language, e.marker, e.text) for e in found] == [
        (4, "bash", "skip: needs Modal", "modal deploy x"), (11, "console", None, "$ true")]


# --- running them ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like the repository's root (its files linked, `.venv` included) plus the
    model folders the registry examples name, so examples run from "the repository root"."""
    root = tmp_path_factory.mktemp("docs-examples")
    for entry in REPO_ROOT.iterdir():
        if entry.name not in (".git", "site", "experiments.toml", ".env", "simulation-results"):
            (root / entry.name).symlink_to(entry)
    if not (root / ".venv").exists():  # the suite runs from an installed environment elsewhere
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    (root / "models").mkdir()
    for name in ("my-model", "my-model-v2"):
        build_feature_extraction(root / "models" / name)
    build_text_generation(root / "models" / "my-generator")
    return root


def example_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_", "MLFLOW_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               HYBRID_TRAFFIC_DIR=str(scratch / "traffic"), COLUMNS="100", NO_COLOR="1")
    return env


@pytest.fixture(scope="module")
def server(scratch: Path) -> Iterator[Served]:
    """`hybrid-serve serve` on the shipped demo registry plus `my-generator`, the text-generation
    experiment the streaming example names (a tiny model)."""
    registry = scratch / "server-experiments.toml"
    shipped = (REPO_ROOT / "core" / "serving" / "experiments.toml").read_text(encoding="utf-8")
    registry.write_text(shipped + f'\n[experiments.my-generator]\nsource = "{scratch / "models" / "my-generator"}"\n'
                        'task = "text-generation"\n', encoding="utf-8")
    with served("inprocess", env={**example_env(scratch), "HYBRID_REGISTRY": str(registry)}) as running:
        yield running


def run(command: str, scratch: Path, server: Served | None) -> subprocess.CompletedProcess[str]:
    if server is not None:
        command = command.replace(DOCUMENTED_ADDRESS, server.url.removeprefix("http://"))
        command = command.replace("localhost:8000", server.url.removeprefix("http://"))
    # `curl -s` prints an error page and exits 0; here an HTTP error fails the example.
    prelude = "set -eu\ncurl() { command curl --fail-with-body \"$@\"; }\n"
    return subprocess.run(["bash", "-c", prelude + command], cwd=scratch, env=example_env(scratch),
                          capture_output=True, text=True, timeout=300)


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line.rstrip())
    for _, expected in steps:  # blank lines that only separate two steps
        while expected and not expected[-1]:
            expected.pop()
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """`expected` line by line, where a line `...` stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and matches(expected[1:], actual[1:])


def test_console_output_matching() -> None:
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["a", "...", "z"], ["a", "z"])
    assert not matches(["a", "...", "z"], ["a", "b"])
    assert not matches(["a", "b"], ["a", "c"])
    assert console_steps("$ one\nout\n\n$ two; echo $?\n2\n") == [("one", ["out"]), ("two; echo $?", ["2"])]


@pytest.mark.parametrize("example", RUNNABLE, ids=lambda e: e.id)
def test_the_example_runs_as_written(example: Example, scratch: Path, request: pytest.FixtureRequest) -> None:
    live = request.getfixturevalue("server") if example.marker == "server" else None
    if example.language != "console":
        done = run(example.text, scratch, live)
        assert done.returncode == 0, f"{example.id} failed ({done.returncode}):\n{example.text}\n--- output:\n{done.stdout}{done.stderr}"
        return
    for command, expected in console_steps(example.text):
        done = subprocess.run(["bash", "-c", "exec 2>&1\n" + command], cwd=scratch, env=example_env(scratch),
                              capture_output=True, text=True, timeout=300)
        actual = [line.rstrip() for line in done.stdout.rstrip("\n").splitlines()]
        assert matches(expected, actual), (
            f"{example.id}: `{command}` printed something else than the page shows\n--- page:\n"
            + "\n".join(expected) + "\n--- now:\n" + "\n".join(actual))
