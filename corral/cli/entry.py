"""The ``corral`` console script: answers ``corral --version`` at once, else runs the CLI.

Importing the command line (:mod:`corral.cli.main`) loads Typer, httpx, pydantic and rich, which
``--version`` does not need. This module imports nothing at module level beyond the standard
library and the package's version, so that it can decide before paying for them.
"""

from __future__ import annotations

import sys
import types

from corral import __version__


def version_text() -> str:
    """What ``corral --version`` prints (here and in :func:`corral.cli.main.version_callback`)."""
    return f"corral {__version__}"


def main() -> None:
    """The entry point: ``corral --version`` alone is answered here, anything else by Typer."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(version_text() + "\n")
        return
    skip_httpx_cli()
    if "serve" not in sys.argv[1:]:
        skip_pydantic_plugins()
    from corral.cli import main as cli

    cli.main()


def skip_httpx_cli() -> None:
    """Keep httpx from importing its own command line tool, which corral never runs.

    ``import httpx`` runs ``from ._main import main``, and ``httpx._main`` imports click, pygments
    and rich's progress, live and syntax modules whenever they are installed (typer brings them):
    about a fifth of a client command's imports (issue 14). A ``None`` in ``sys.modules`` makes
    that import raise ``ImportError``, which httpx catches by defining a stub ``main``; nothing
    else in httpx uses ``_main``. Only the ``corral`` command does this, never a program that
    imports :mod:`corral.client` as a library.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _no_plugins() -> tuple[()]:
    return ()


def skip_pydantic_plugins() -> None:
    """Keep pydantic from looking for its plugins, which a client command never has a use for.

    The first validator pydantic builds (the answer's model, Typer's option parsers) calls
    ``pydantic.plugin._loader.get_plugins``, whose module imports :mod:`importlib.metadata`
    (and with it :mod:`email`, :mod:`zipfile`, ...) and then reads the entry points of every
    installed distribution: about 4 % of ``corral tickets``'s instructions (issue 14). A module
    answering "no plugins" takes its place, which is what pydantic itself does when
    ``PYDANTIC_DISABLE_PLUGINS`` is set (an environment variable would also reach the commands
    ``corral acquire -- CMD`` runs). ``corral serve`` is left alone: a server may be observed
    through a pydantic plugin, and it reads entry points for its backends anyway. Only the
    ``corral`` command does this, never a program that imports :mod:`corral.client`.
    """
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        stub = types.ModuleType(name, "corral's command line: no pydantic plugins.")
        stub.get_plugins = _no_plugins  # type: ignore[attr-defined]
        sys.modules[name] = stub
