"""The registry file changed by several processes, and the live registry that follows it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Callable

import pytest

from core.serving.live_registry import FileSource, LiveRegistry, RegistryChange, registry_diff
from core.serving.registry import Experiment, Registry, RegistryError, experiment_entry
from core.serving.registry_file import ReadOnlyRegistry, RegistryFile


def entry(experiment_id: str, source: str = "org/model", task: str = "feature-extraction", **extra: str) -> Experiment:
    return experiment_entry(experiment_id, {"source": source, "task": task, **extra}, Path("/"))


def _add_many(path: str, prefix: str, count: int) -> None:
    file = RegistryFile(Path(path))
    for i in range(count):
        file.change(lambda r, i=i: r.with_experiment(entry(f"{prefix}-{i}")), create=True)


def test_concurrent_adds_from_two_processes_all_land_in_a_valid_registry(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(path), prefix, 25)) for prefix in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    registry = Registry.load(path)
    assert sorted(e.id for e in registry) == sorted(f"{p}-{i}" for p in "ab" for i in range(25))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_a_change_replaces_the_file_whole_so_a_reader_never_sees_half_of_it(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    file = RegistryFile(path)
    file.change(lambda r: r.with_experiment(entry("one")), create=True)
    stamp = file.stamp()
    inode = path.stat().st_ino
    before, after = file.change(lambda r: r.with_experiment(entry("two")))
    assert [e.id for e in before] == ["one"] and [e.id for e in after] == ["one", "two"]
    assert path.stat().st_ino != inode and file.stamp() != stamp  # renamed over, not written in place
    (tmp_path / ".experiments.toml.killed.tmp").write_text("[experiments.half")  # a writer killed mid-write
    assert [e.id for e in file.read()[1]] == ["one", "two"]
    file.change(lambda r: r.without("one").without("two"))
    assert len(Registry.load(path)) == 0 and "[experiments]" in path.read_text()  # empty, and still a registry


def test_the_shipped_demo_registry_is_never_changed() -> None:
    file = RegistryFile(None)
    with pytest.raises(ReadOnlyRegistry, match="HYBRID_REGISTRY"):
        file.change(lambda r: r.with_experiment(entry("x")))


@pytest.mark.parametrize("fields, field", [
    ({"source": "org/m", "task": "summarise"}, "task"),
    ({"source": "s3:bucket/model", "task": "feature-extraction"}, "source"),
    ({"source": "mlflow:models:/clf", "task": "feature-extraction"}, "source"),
    ({"source": "org/m", "task": "feature-extraction", "sha256": "abc"}, "sha256"),
    ({"source": "org/m", "task": "feature-extraction", "colour": "red"}, "colour"),
])
def test_an_entry_is_validated_naming_the_field(fields: dict[str, str], field: str) -> None:
    with pytest.raises(RegistryError, match=rf"\[experiments\.e\]: {field}"):
        experiment_entry("e", fields, Path("/"))
    with pytest.raises(RegistryError, match=r"id"):
        experiment_entry("no spaces", {"source": "org/m", "task": "feature-extraction"}, Path("/"))


def test_the_diff_names_what_was_added_removed_and_changed() -> None:
    before = Registry({"a": entry("a"), "b": entry("b"), "c": entry("c")})
    after = Registry({"a": entry("a"), "b": entry("b", source="org/other"), "d": entry("d")})
    assert registry_diff(before, after) == RegistryChange(added=("d",), removed=("c",), changed=("b",))
    assert not registry_diff(before, before)


def test_a_live_registry_follows_its_file_and_keeps_the_last_good_one_on_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    RegistryFile(path).change(lambda r: r.with_experiment(entry("a")), create=True)
    seen: list[RegistryChange] = []

    async def scenario() -> None:
        live = LiveRegistry.from_file(path, poll_s=0.05)

        async def listener(change: RegistryChange, registry: Registry) -> None:
            seen.append(change)

        live.subscribe(listener)
        live.start()
        RegistryFile(path).change(lambda r: r.with_experiment(entry("b")))
        await _until(lambda: live.get("b") is not None)
        path.write_text(path.read_text() + '\n[experiments.c]\nsource = "org/m"\ntask = "poetry"\n')  # a bad hand edit
        await _until(lambda: live.status.last_error is not None)
        assert [e.id for e in live] == ["a", "b"] and "task" in live.status.last_error  # still served
        path.write_text(Registry({"b": entry("b", source="org/new")}).to_toml())  # fixed: a removed, b changed
        await _until(lambda: live.get("a") is None)
        assert live.status.last_error is None and live.get("b").source == "org/new"  # type: ignore[union-attr]
        await live.close()

    asyncio.run(scenario())
    assert seen == [RegistryChange(added=("b",)), RegistryChange(removed=("a",), changed=("b",))]


def test_a_moving_source_that_resolves_to_another_model_is_announced_as_changed() -> None:
    alias = entry("champ", source="mlflow:models:/clf@champion")
    pinned = entry("pinned", source="mlflow:models:/clf/1")
    versions = {"champ": "models:/clf/1"}
    asked: list[str] = []

    def identity(experiment: Experiment) -> str | None:
        asked.append(experiment.id)
        return versions[experiment.id]

    async def scenario() -> list[RegistryChange]:
        live = LiveRegistry(_Static(Registry({"champ": alias, "pinned": pinned})), Registry({"champ": alias, "pinned": pinned}),
                            identity=identity)
        changes = [await live.check_identities()]  # first resolution: nothing moved yet
        versions["champ"] = "models:/clf/2"  # promoted in MLflow
        changes.append(await live.check_identities())
        changes.append(await live.check_identities())
        assert live.identity("champ") == "models:/clf/2"
        return changes

    assert asyncio.run(scenario()) == [RegistryChange(), RegistryChange(changed=("champ",)), RegistryChange()]
    assert set(asked) == {"champ"}  # a pinned version never moves: never asked


def test_an_unreachable_tracking_server_keeps_the_model_and_reports_why() -> None:
    alias = entry("champ", source="mlflow:models:/clf@champion")

    def identity(experiment: Experiment) -> str | None:
        raise ConnectionError("tracking server unreachable")

    async def scenario() -> LiveRegistry:
        live = LiveRegistry(_Static(Registry({"champ": alias})), Registry({"champ": alias}), identity=identity)
        assert not await live.check_identities()
        return live

    live = asyncio.run(scenario())
    assert live.describe()["resolve_errors"] == {"champ": "tracking server unreachable"}


def test_a_moving_source_is_resolved_after_its_put_answers_and_a_failure_is_reported(tmp_path: Path) -> None:
    """Resolving may hang on the tracking server: the PUT that adds an alias does not wait for it."""
    path = tmp_path / "experiments.toml"
    RegistryFile(path).change(lambda r: r.with_experiment(entry("plain")), create=True)
    release = threading.Event()

    def identity(experiment: Experiment) -> str | None:
        release.wait(30)
        raise ConnectionError("http://alice:s3cret-pw@tracking:5000 hung up")

    async def scenario() -> tuple[RegistryChange, dict[str, str], dict[str, str]]:
        live = _following(path, identity)
        change = await asyncio.wait_for(live.put(entry("champ", source="mlflow:models:/clf@champion")), 5)
        while_hung = dict(live.describe()["resolve_errors"])
        release.set()
        await _until(lambda: "champ" in live.status.identity_errors)
        await live.close()
        return change, while_hung, live.describe()["resolve_errors"]

    change, while_hung, errors = asyncio.run(scenario())
    assert change == RegistryChange(added=("champ",)) and while_hung == {}
    assert errors == {"champ": "http://***@tracking:5000 hung up"}  # scrubbed where it is recorded


def test_hung_resolutions_never_hold_the_registrys_own_reads(tmp_path: Path) -> None:
    """More hung resolutions than asyncio's default pool has threads: the registry still reads its
    file (a 404's look-up, an experiment added by the CLI) and takes a plain change."""
    path = tmp_path / "experiments.toml"
    RegistryFile(path).change(lambda r: r.with_experiment(entry("plain")), create=True)
    release, hung = threading.Event(), []
    default_pool = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor's threads

    def identity(experiment: Experiment) -> str | None:
        hung.append(experiment.id)
        release.wait(30)
        return "models:/clf/1"

    async def scenario() -> tuple[bool, RegistryChange]:
        live = _following(path, identity)
        puts = []
        for i in range(default_pool + 2):  # one after the other, as clients that give up after 0.2 s send them
            puts.append(asyncio.ensure_future(live.put(entry(f"alias-{i}", source=f"mlflow:models:/m{i}@champion"))))
            await asyncio.wait([puts[-1]], timeout=0.2)
        RegistryFile(path).change(lambda r: r.with_experiment(entry("by-cli")))  # another writer
        try:
            await asyncio.wait_for(live.refresh(), 5)
            plain = await asyncio.wait_for(live.put(entry("plain-2")), 5)
            return live.get("by-cli") is not None, plain
        finally:
            release.set()
            await asyncio.wait_for(asyncio.gather(*puts, return_exceptions=True), 30)
            await live.close()

    seen, plain = asyncio.run(scenario())
    assert seen and plain == RegistryChange(added=("plain-2",))


def _following(path: Path, identity: Callable[[Experiment], str | None]) -> LiveRegistry:
    """The live registry of a file, with moving sources resolved by `identity`."""
    source = FileSource(path)
    stamp, registry = source.file.read()
    return LiveRegistry(source, registry, stamp, identity=identity)


class _Static:
    base_dir = Path("/")

    def __init__(self, registry: Registry):
        self.registry = registry

    async def stamp(self) -> int:
        return 0

    async def read(self) -> tuple[int, Registry]:
        return 0, self.registry


async def _until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


class _Counted:
    """A source whose stamp takes a while (a network call) and counts its calls."""

    base_dir = Path("/")

    def __init__(self, registry: Registry):
        self.registry, self.version, self.stamps = registry, 0, 0

    async def stamp(self) -> int:
        self.stamps += 1
        await asyncio.sleep(0.05)
        return self.version

    async def read(self) -> tuple[int, Registry]:
        return self.version, self.registry


def test_a_flood_of_unknown_ids_costs_one_stamp_read_at_a_time_and_still_sees_a_new_experiment() -> None:
    source = _Counted(Registry({"a": entry("a")}))

    async def scenario() -> tuple[list[bool], int]:
        live = LiveRegistry(source, source.registry, stamp=0)
        source.registry, source.version = Registry({"a": entry("a"), "b": entry("b")}), 1  # added elsewhere

        async def look(experiment_id: str) -> bool:
            await live.refresh_shared()
            return live.get(experiment_id) is not None

        found = await asyncio.gather(*[look("b")] * 10, *[look(f"typo-{i}") for i in range(190)])
        return list(found), source.stamps

    found, stamps = asyncio.run(scenario())
    assert found[:10] == [True] * 10 and not any(found[10:])
    assert stamps <= 3, stamps  # 200 look-ups at once: one refresh running, one shared by all who came meanwhile
