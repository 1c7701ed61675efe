"""Authentication modes, and the guarantee that no part of a token ever leaves the settings object."""

from __future__ import annotations

import logging
import traceback

import pytest
from typer.testing import CliRunner

from core.auth import AuthMode, auth_mode, modal_client_environment, mode_line
from core.cli import app
from core.settings import SettingsError, load_settings, setting_sources

TOKEN_ID = "ak-Zq7XwT3pL9sKdM2vB8nR4y"
TOKEN_SECRET = "as-Hf6GcJ1uE5oW0aQ9iY3tZ7"


def fragments(secret: str, size: int = 6) -> list[str]:
    """Every substring of the secret of `size` characters: a prefix or any slice must not leak."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN_ID, TOKEN_SECRET):
        for piece in fragments(secret):
            assert piece not in text, f"a fragment of a token leaked: {piece!r}"


def test_development_mode_line() -> None:
    settings = load_settings()
    assert auth_mode(settings) is AuthMode.DEVELOPMENT
    assert mode_line(settings) == "🔧 Development mode: Using web authentication"
    assert modal_client_environment(settings) == {}


def test_production_mode_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)
    settings = load_settings()
    assert auth_mode(settings) is AuthMode.PRODUCTION
    assert mode_line(settings) == "🚀 Production mode: Using Modal token ID and secret"
    assert modal_client_environment(settings) == {"MODAL_TOKEN_ID": TOKEN_ID, "MODAL_TOKEN_SECRET": TOKEN_SECRET}


def test_no_token_fragment_in_repr_str_dump_or_cli(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)
    caplog.set_level(logging.DEBUG)
    settings = load_settings()
    logging.getLogger("test").info("settings: %s %r", settings, settings)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0
    assert "🚀 Production mode: Using Modal token ID and secret" in result.output
    for text in (
        repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json(),
        str(settings.public_dict()), str(setting_sources()), result.output, caplog.text,
    ):
        assert_no_secret(text)


@pytest.mark.parametrize("only", ["MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"])
def test_no_token_fragment_in_errors(only: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(only, TOKEN_ID if only == "MODAL_TOKEN_ID" else TOKEN_SECRET)
    monkeypatch.setenv("MODAL_MAX_CONTAINERS", "0")  # a second error: field errors are listed with inputs
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert_no_secret(str(err.value))
    assert_no_secret(repr(err.value))
    assert_no_secret("".join(traceback.format_exception(err.value)))
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert_no_secret(result.output)


def test_masked_output_does_not_depend_on_token_length(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = []
    for length in (8, 40):
        monkeypatch.setenv("MODAL_TOKEN_ID", "i" * length)
        monkeypatch.setenv("MODAL_TOKEN_SECRET", "s" * length)
        settings = load_settings()
        outputs.append((repr(settings), settings.model_dump_json(), CliRunner().invoke(app, ["config"]).output))
    assert outputs[0] == outputs[1]
