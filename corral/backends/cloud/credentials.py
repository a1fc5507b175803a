"""Cloud credentials: never in corral's configuration, never in an error or a log line.

The configuration may only *name* where credentials are (an environment variable, a file, an
AWS profile). :func:`refuse_inline_credentials` rejects a backend's options that carry a secret
(blanking the value first, since pydantic keeps its input in the error that the ``ConfigError``
is chained to); :func:`from_environment` and :func:`from_file` read them at start, and their
errors name the variable or the file, never a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from corral import exceptions

SECRET_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key",
        "access_key_id",
        "secret_key",
        "secret_access_key",
        "secret",
        "session_token",
        "password",
        "credentials",
        "key",
        "token",
        "api_key",
    }
)


def refuse_inline_credentials(data: object, where: str) -> object:
    """Refuse (``ValueError``, for a pydantic validator) options that carry credentials."""
    if isinstance(data, dict):
        found = sorted(k for k in data if isinstance(k, str) and k.lower() in SECRET_KEYS)
        args = data.get("driver_args")
        if isinstance(args, dict):
            inner = sorted(k for k in args if isinstance(k, str) and k.lower() in SECRET_KEYS)
            for key in inner:
                args[key] = "<hidden>"
            found += [f"driver_args.{k}" for k in inner]
        for key in found:
            if key in data:
                data[key] = "<hidden>"
        if found:
            raise ValueError(
                f"{', '.join(found)}: credentials are never read from corral's configuration; "
                f"{where}"
            )
    return data


def from_environment(
    key_env: str, secret_env: str | None, env: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """The key (and secret) from the named environment variables."""
    source = os.environ if env is None else env
    missing = [n for n in (key_env, secret_env) if n is not None and not source.get(n)]
    if missing:
        raise exceptions.ConfigError(
            f"credentials: environment variable(s) {', '.join(missing)} not set or empty"
        )
    return source[key_env], source[secret_env] if secret_env is not None else None


def from_file(path: Path) -> tuple[str, str | None]:
    """The ``key`` and optional ``secret`` from a YAML or JSON file (mode 0600 recommended)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise exceptions.ConfigError(
            f"credentials_file {str(path)!r}: cannot read it ({exc.strerror})"
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        # the parser's message may quote the file's content: say where, not what
        raise exceptions.ConfigError(
            f"credentials_file {str(path)!r}: not valid YAML/JSON"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) or not data["key"]:
        raise exceptions.ConfigError(
            f"credentials_file {str(path)!r}: needs a mapping with a non-empty 'key' "
            "(and usually 'secret')"
        )
    secret = data.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise exceptions.ConfigError(f"credentials_file {str(path)!r}: 'secret' must be a string")
    return data["key"], secret
