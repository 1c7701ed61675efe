"""Error text without credentials: nothing the server answers or logs shows a password or a token.

Why this module exists: client libraries — MLflow's above all — put the URL they called in their
error messages, with the user and password of `http://user:pass@host` or a `?token=` in it, and
those messages travel into the 503 body of `/predict`, `/health`'s `registry.resolve_errors` and
`/experiments`' `last_error`. Error text is scrubbed where it is made (`mlflow_source`) and again
where it leaves the server (the JSON error body, the state views, the error log line), so a path
added later cannot forget it. Scrubbed: a URL's userinfo, secret-looking query parameters (token,
password, signature, ...), and wherever they appear verbatim the values of the credential variables
(MLflow's, the artifact stores', this server's own) and the password in MLflow's tracking or
registry URI.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"

#: Variables whose values are credentials (MLflow's clients and the artifact stores they reach, this
#: server's own tokens).
CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "DATABRICKS_TOKEN", "DATABRICKS_PASSWORD", "DATABRICKS_CLIENT_SECRET",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "HYBRID_API_TOKEN", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET",
)
#: URIs whose userinfo holds credentials.
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
#: Shorter values are not replaced verbatim (they would mangle ordinary words); in a URL they still are.
MIN_SECRET_LENGTH = 4

# scheme://USERINFO@host — userinfo up to the last "@" before the path (a raw "@" in a password included).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")
_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:token|passw(?:or)?d|pwd|secret|signature|sig|credential|key|auth)[A-Za-z0-9_.-]*"
_QUERY = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME})=[^&\s#'\"]*", re.IGNORECASE)


def secrets(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """The credential values to hide wherever they appear, longest first."""
    env = os.environ if environ is None else environ
    found = {env.get(name, "") for name in CREDENTIAL_VARIABLES}
    for name in URI_VARIABLES:
        try:
            password = urlsplit(env.get(name, "")).password
        except ValueError:
            password = None
        if password:
            found |= {password, unquote(password)}
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def scrub(text: str, hidden: list[str] | None = None) -> str:
    """`text` with every credential replaced by `***` (`hidden`: the values of `secrets()`, read once
    by a caller that scrubs many texts)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['name']}={MASK}", text)
    for secret in secrets() if hidden is None else hidden:
        text = text.replace(secret, MASK)
    return text


def scrub_tree(value: Any, hidden: list[str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string scrubbed; keys are kept."""
    hidden = secrets() if hidden is None else hidden
    if isinstance(value, str):
        return scrub(value, hidden)
    if isinstance(value, dict):
        return {k: scrub_tree(v, hidden) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v, hidden) for v in value]
    return value


def reason(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, scrubbed, then cut to `limit` characters (scrubbed first:
    a cut never leaves the start of a password behind)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    message = scrub(" ".join(str(message).split()))
    return message if len(message) <= limit else message[:limit - 3] + "..."
