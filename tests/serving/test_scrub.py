"""Credentials scrubbed from error text: URLs' userinfo, secret query parameters, credential values."""

from __future__ import annotations

import pytest

from core.serving.scrub import reason, scrub, scrub_tree, secrets

# What MLflow's REST client said, verbatim, for a tracking URI with a user and a password.
MLFLOW_MESSAGE = ("API request to http://alice:hunter2pw@127.0.0.1:9/api/2.0/mlflow/registered-models/alias failed "
                  "with exception HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded")


@pytest.fixture(autouse=True)
def no_credentials_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                 "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("text", "expected"), [
    (MLFLOW_MESSAGE, MLFLOW_MESSAGE.replace("alice:hunter2pw", "***")),
    ("https://dapi0123456789@adb-1.azuredatabricks.net/api", "https://***@adb-1.azuredatabricks.net/api"),
    ("http://bob:p@ss@host:5000/x and http://carol:pw@other", "http://***@host:5000/x and http://***@other"),
    ("see http://host:5000/api, mail admin@example.com", "see http://host:5000/api, mail admin@example.com"),
])
def test_the_userinfo_of_a_url_is_hidden_and_the_rest_kept(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_secret_query_parameters_are_hidden_and_the_others_kept() -> None:
    text = ("GET https://bucket.s3.amazonaws.com/model.bin?X-Amz-Credential=AKIA123&X-Amz-Signature=abc123&versionId=7 "
            "failed; url: /?token=abc/api/2.0/mlflow/runs/get&run_id=42 and ?sig=zz&access_token=t0k&password=pw")
    assert scrub(text) == (
        "GET https://bucket.s3.amazonaws.com/model.bin?X-Amz-Credential=***&X-Amz-Signature=***&versionId=7 "
        "failed; url: /?token=***&run_id=42 and ?sig=***&access_token=***&password=***")


def test_credential_values_are_hidden_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-9f8e7d6c")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pass")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s%40cret-pw@tracking:5000")
    monkeypatch.setenv("HF_TOKEN", "abc")  # too short to replace verbatim: it would mangle ordinary words
    text = "header Bearer tok-9f8e7d6c refused for pass; user alice, secret s@cret-pw (s%40cret-pw); abc"
    assert scrub(text) == "header Bearer *** refused for ***; user alice, secret *** (***); abc"
    assert secrets() == ["tok-9f8e7d6c", "s%40cret-pw", "s@cret-pw", "pass"]  # longest first


def test_a_tree_has_every_string_scrubbed_and_its_keys_and_numbers_kept() -> None:
    tree = {"resolve_errors": {"champ": MLFLOW_MESSAGE}, "count": 2, "none": None,
            "list": ["http://u:p@h/", 1.5, ("x", "?token=y")]}
    assert scrub_tree(tree) == {"resolve_errors": {"champ": scrub(MLFLOW_MESSAGE)}, "count": 2, "none": None,
                                "list": ["http://***@h/", 1.5, ["x", "?token=***"]]}


def test_a_reason_is_scrubbed_before_it_is_cut_so_no_start_of_a_password_is_left() -> None:
    long = RuntimeError("x" * 280 + " http://alice:" + "p" * 40 + "@host/\n next line")
    cut = reason(long)
    assert len(cut) == 300 and cut.endswith("...") and "alice" not in cut and "ppp" not in cut
    assert reason(RuntimeError("a\n  b")) == "a b" and reason(KeyError()) == "KeyError"
