"""What a ``corral`` command loads before it does anything (issue 14, fast CLI).

Every module imported at start-up is paid by every command, so the client commands must not
load the server side, and ``corral --version`` must not even load the CLI's libraries. The
figures are in bench/http_api.py; these tests only pin down what is imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from corral.api.server import BackgroundServer

SERVER_SIDE = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "yaml",
    "asyncio",
    "corral.api",
    "corral.store",
    "corral.controller",
    "corral.config",
)
"""Modules a client command ('corral tickets') does not need: the server, its store and its
configuration, and asyncio (the CLI uses the blocking client)."""


def _loaded(code: str) -> tuple[set[str], str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)), file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stderr.split()), done.stdout


def _matching(loaded: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_the_cli_does_not_import_the_server_side() -> None:
    """Fails when a CLI module imports the server side at module level again: e.g.
    ``from corral.config import CorralConfig`` or ``import asyncio`` at the top of
    ``corral/cli/admin.py``, ``import yaml`` at the top of ``corral/cli/resalloc.py``, or
    ``corral.client`` importing its asyncio twin eagerly."""
    loaded, _ = _loaded("import corral.cli.main")
    assert "corral.cli.main" in loaded  # the probe really imported it
    assert _matching(loaded, SERVER_SIDE) == set()


def test_version_loads_no_cli_library() -> None:
    """Fails when the console script's ``--version`` goes through Typer (``corral.cli.entry``
    importing ``corral.cli.main`` at module level, or not answering ``--version`` itself)."""
    loaded, out = _loaded(
        "import sys\nsys.argv = ['corral', '--version']\nfrom corral.cli.entry import main\nmain()"
    )
    assert out.strip().startswith("corral ")
    assert not _matching(loaded, ("typer", "click", "httpx", "pydantic", "rich", "corral.cli.main"))


@pytest.mark.parametrize("argv", [["--version"], ["--version", "--url", "http://x"]])
def test_both_version_paths_print_the_same(argv: list[str]) -> None:
    """Fails when the fast answer and Typer's eager ``--version`` drift apart."""
    from corral import __version__

    done = subprocess.run(
        [sys.executable, "-m", "corral", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == f"corral {__version__}\n"


def test_a_client_command_skips_httpx_command_line_tool() -> None:
    """Fails when the console script stops keeping ``httpx._main`` out (``skip_httpx_cli`` not
    called before the CLI is imported): ``import httpx`` then loads click, pygments and rich's
    progress and syntax modules, which no corral command uses. An ``https`` URL goes through
    httpx (a plain ``http`` one does not, see below)."""
    loaded, out = _loaded(
        "import sys\nsys.argv = ['corral', 'tickets', '--url', 'https://127.0.0.1:9']\n"
        "from corral.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code)"
    )
    # the command ran (through Typer, the client and httpx) and failed to connect: port 9
    assert out.strip() == "8"
    assert {"httpx", "httpcore", "corral.client.sync", "typer"} <= loaded
    assert not _matching(loaded, ("pygments", "click", "rich.progress", "rich.syntax"))


HTTPX_STACK = ("httpx", "httpcore", "h11", "anyio", "http.cookiejar", "urllib.request")
"""What a request through httpx imports and one through ``corral.client.plainhttp`` does not."""


def test_a_client_command_on_plain_http_imports_no_httpx() -> None:
    """Fails when ``corral tickets`` on a plain ``http://`` URL imports httpx again (about a
    sixth of its instructions, issue 14): ``common.client`` not passing a ``PlainHTTP``,
    ``corral.client`` or ``corral.client.core``/``sync`` importing httpx at module level. The
    command still reaches the server's address and fails as before (exit 8, same message)."""
    loaded, out = _loaded(
        "import sys\nsys.argv = ['corral', 'tickets', '--url', 'http://127.0.0.1:9']\n"
        "from corral.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code)"
    )
    assert out.strip() == "8"
    assert {"corral.client.plainhttp", "corral.client.sync", "typer"} <= loaded
    assert _matching(loaded, HTTPX_STACK) == {"httpx._main"} & loaded  # skip_httpx_cli's None


def test_httpx_works_without_its_command_line_tool() -> None:
    """Fails when keeping ``httpx._main`` out breaks ``import httpx`` (a future httpx importing
    it without catching the ``ImportError``) or a request through it."""
    _, out = _loaded(
        "from corral.cli.entry import skip_httpx_cli\nskip_httpx_cli()\nimport httpx\n"
        "t = httpx.MockTransport(lambda r: httpx.Response(200, text='ok'))\n"
        "print(httpx.Client(transport=t).get('http://x/').text)"
    )
    assert out.strip() == "ok"


def _names(app: object) -> set[str | None]:
    from corral.cli import main

    assert isinstance(app, main.typer.Typer)
    return {main._command_name(c) for c in app.registered_commands} | {
        main._group_name(g) for g in app.registered_groups
    }


def test_only_the_invoked_command_is_built() -> None:
    """Fails when the console script builds every command again (``only`` returning the whole
    app for a named command: a name derived differently from Typer's, root options before the
    command not skipped), or when it mutates the app it prunes."""
    from corral.cli import main

    everything = _names(main.app)
    assert {"tickets", "serve", "import-resalloc", "vm", "db"} <= everything
    for name in everything:
        assert name is not None
        for argv in ([name], ["--url", "http://x", name, "--json"], ["--token=t", name]):
            assert _names(main.only(main.app, argv)) == {name}, argv
    assert _names(main.app) == everything  # the app itself is untouched
    for argv in ([], ["--help"], ["--version"], ["nosuch"], ["--url", "tickets"]):
        assert main.only(main.app, argv) is main.app, argv


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--url", "http://127.0.0.1:9", "tickets"], 8, "error: server_unreachable"),
        (["tickets", "--url", "http://127.0.0.1:9", "--json"], 8, "error: server_unreachable"),
        (["vm", "show", "--help"], 0, "Usage: python -m corral vm show"),
        (["db", "--help"], 0, "upgrade"),
        (["tickets", "--all", "--state", "closed"], 3, "--all and --state"),
        (["tikets"], 2, "No such command"),
    ],
)
def test_a_pruned_app_runs_commands_like_the_whole_one(
    argv: list[str], code: int, expected: str
) -> None:
    """Fails when running only the invoked command changes what it does: the root's options
    (``--url`` before the command) or callback lost, a group's subcommands dropped, an unknown
    command no longer refused with Typer's usage error."""
    done = subprocess.run(
        [sys.executable, "-m", "corral", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert expected in done.stdout + done.stderr


def test_corral_tickets_on_a_pipe_loads_neither_rich_nor_pydantic_plugins(
    server: BackgroundServer,
) -> None:
    """Fails when ``corral tickets`` written to a pipe imports rich again (``output`` importing
    it at module level, ``table`` not writing the plain table) or pydantic looks for its plugins
    (``skip_pydantic_plugins`` not called: ``importlib.metadata`` and every distribution's entry
    points read)."""
    from apitools import ADMIN_TOKEN  # tests/api, on the path through tests/cli/conftest.py

    url = server.url
    loaded, out = _loaded(
        "import sys\n"
        f"sys.argv = ['corral', 'tickets', '--all', '--url', {url!r}, '--token', {ADMIN_TOKEN!r}]\n"
        "from corral.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code"
    )
    assert "corral.client.sync" in loaded and out.startswith(("Tickets\n", "no tickets\n"))
    assert not _matching(loaded, ("rich", "importlib.metadata"))


def test_the_server_starts_without_the_dashboard_templates() -> None:
    """Fails when ``corral serve``'s modules import Jinja2 again at start-up (the dashboard's
    ``Jinja2Templates`` made at import in ``corral.api.ui.pages`` instead of on its first
    page): about a tenth of the server's start-up, for pages few requests ask for."""
    loaded, _ = _loaded("import corral.api.app, corral.api.server, corral.cli.admin")
    assert "corral.api.ui.pages" in loaded
    assert not _matching(loaded, ("jinja2", "fastapi.templating"))


HTTPX_CLI = ("httpx._main", "click", "pygments", "rich")
"""What ``import httpx`` loads for httpx's own command line tool (``httpx._main``)."""


def test_the_client_library_skips_httpx_command_line_tool_and_leaves_it_importable() -> None:
    """Fails when ``import corral.client`` loads ``httpx._main`` again (and with it click,
    pygments and rich: a sixth of the library's import), or when keeping it out leaves a
    ``None`` behind in ``sys.modules``, so that the program importing corral could no longer
    import ``httpx._main`` itself. (An ``https`` URL: the client sends to a plain ``http`` one
    without httpx.)"""
    loaded, out = _loaded(
        "import corral.client, sys\n"
        "corral.client.Client('https://127.0.0.1:9').close()\n"
        "assert 'httpx' in sys.modules\n"
        "print(sorted(m for m in sys.modules if sys.modules[m] is None and 'httpx' in m))"
    )
    assert out.strip() == "[]"
    assert not _matching(loaded, HTTPX_CLI)
    _, out = _loaded(
        "import corral.client\ncorral.client.Client('https://127.0.0.1:9').close()\n"
        "from httpx._main import main\nprint(type(main).__module__)"
    )
    assert out.strip().startswith("click")  # the real tool, not httpx's stub function


def test_the_client_library_keeps_a_program_httpx_command_line_tool() -> None:
    """Fails when ``import corral.client`` drops ``httpx._main`` from a program that had
    imported httpx (and its tool) before it."""
    loaded, _ = _loaded("import httpx, corral.client")
    assert "httpx._main" in loaded


def test_a_cut_tickets_list_on_a_pipe_loads_no_rich(server: BackgroundServer) -> None:
    """Fails when ``corral tickets`` cut at ``--limit`` imports rich to print its note on
    standard error (``output.errors.print`` instead of ``output.line``), or when the note goes
    missing."""
    import httpx
    from apitools import ADMIN_TOKEN, auth  # tests/api, on the path through tests/cli/conftest.py

    for _ in range(2):
        httpx.post(
            f"{server.url}/v1/tickets", json={"pool": "small"}, headers=auth(ADMIN_TOKEN)
        ).raise_for_status()
    code = (
        "import sys\n"
        f"sys.argv = ['corral', 'tickets', '--limit', '1', '--url', {server.url!r}, "
        f"'--token', {ADMIN_TOKEN!r}]\n"
        "from corral.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code"
    )
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)), file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.startswith("Tickets\n")
    assert done.stderr.startswith("note: only the first 1 tickets are shown; more match")
    assert not _matching(set(done.stderr.split()), ("rich",))
