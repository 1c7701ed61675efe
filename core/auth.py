"""Authentication mode: production (Modal token pair) or development (the profile `modal setup` wrote).

Why this module exists: the mode is decided once, from the settings, and announced with one exact
line, so an operator can tell from any log which credentials a deploy used — without the credentials
themselves ever being printed. The one-token-only error is raised earlier, when settings load.
"""

from __future__ import annotations

from enum import StrEnum

from core.settings import Settings


class AuthMode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


MODE_LINES: dict[AuthMode, str] = {
    AuthMode.DEVELOPMENT: "🔧 Development mode: Using web authentication",
    AuthMode.PRODUCTION: "🚀 Production mode: Using Modal token ID and secret",
}


def auth_mode(settings: Settings) -> AuthMode:
    """Production when both tokens are set; development when neither is (settings reject the rest)."""
    return AuthMode.PRODUCTION if settings.modal_token_id is not None else AuthMode.DEVELOPMENT


def mode_line(settings: Settings) -> str:
    """The exact line that announces the mode."""
    return MODE_LINES[auth_mode(settings)]


def modal_client_environment(settings: Settings) -> dict[str, str]:
    """Variables to hand to the Modal client in production mode; empty in development mode.

    The only place a token is revealed, and only to the process that authenticates with it.
    """
    if settings.modal_token_id is None or settings.modal_token_secret is None:
        return {}
    return {
        "MODAL_TOKEN_ID": settings.modal_token_id.get_secret_value(),
        "MODAL_TOKEN_SECRET": settings.modal_token_secret.get_secret_value(),
    }
