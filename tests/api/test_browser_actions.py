"""The dashboard's admin actions in a real headless browser (issue 12): drain and resume a pool
and stop a task through their confirmation pages, from the keyboard where a person would use
it; the hosts page of a single host. No console error on any of them; screenshots of each page
go to ``$CORRAL_ARTIFACTS`` (default: a temporary directory, printed).

What each test catches: a button that is not a link or a button a browser can follow (or not
reachable by its accessible name), a confirmation page that does not post, an action whose
page ends on an error, a script error on the new pages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, GATES, controller_class, make_config, register_test_steps

from corral.api.server import BackgroundServer
from corral.tasks import Step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure
        raise RuntimeError(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("CORRAL_ARTIFACTS") or tempfile.mkdtemp(prefix="corral-ui-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


RUNNING: dict[str, Any] = {}
"""The server's controller and event loop (to submit a task in it)."""


async def _create(config: Any) -> Any:
    RUNNING["controller"] = await controller_class().create(config)
    RUNNING["loop"] = asyncio.get_running_loop()
    return RUNNING["controller"]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(), factory=_create) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


class Page:
    """A logged-in admin page that records console errors and failed requests."""

    def __init__(self, browser: Any, server: BackgroundServer) -> None:
        self.context = browser.new_context(base_url=server.url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto("/ui/pools")
        self.page.get_by_label("Token").fill(ADMIN_TOKEN)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(lambda url: url.endswith("/ui/pools") and "login" not in url)

    def close(self) -> None:
        self.context.close()


def _mode(page: Any, pool: str) -> str:
    text: str = page.locator(f'section[data-pool="{pool}"] .mode').inner_text()
    return text


def test_drain_and_resume_a_pool(browser: Any, server: BackgroundServer, artifacts: Path) -> None:
    page = Page(browser, server)
    p = page.page
    assert _mode(p, "other") == "active"
    p.locator('section[data-pool="other"]').get_by_role("link", name="Drain…").click()
    p.wait_for_url("**/ui/pools/other/drain")
    assert p.locator("h1").inner_text() == "Drain pool other?"
    p.screenshot(path=str(artifacts / "confirm-drain.png"))
    button = p.get_by_role("button", name="Drain other")
    button.focus()
    p.keyboard.press("Enter")  # the confirmation works from the keyboard
    p.wait_for_url("**/ui/pools")
    assert _mode(p, "other") == "draining"
    p.locator('section[data-pool="other"]').get_by_role("link", name="Resume…").click()
    p.wait_for_url("**/ui/pools/other/resume")
    p.get_by_role("button", name="Resume other").click()
    p.wait_for_url("**/ui/pools")
    assert _mode(p, "other") == "active"
    p.screenshot(path=str(artifacts / "pools-actions.png"), full_page=True)
    assert page.errors == []
    page.close()


def test_stop_a_task(browser: Any, server: BackgroundServer, artifacts: Path) -> None:
    register_test_steps()
    controller, loop = RUNNING["controller"], RUNNING["loop"]

    async def submit() -> str:
        GATES["browser-stop"] = asyncio.Event()
        task_id: str = await controller.tasks.submit(
            "browser-test", jobs=[Step("test.api.gate", {"name": "browser-stop"})]
        )
        return task_id

    task_id = asyncio.run_coroutine_threadsafe(submit(), loop).result(30)
    page = Page(browser, server)
    p = page.page
    p.goto("/ui/tasks")
    row = p.locator("tr", has=p.locator(f"code:text-is('{task_id}')"))
    row.get_by_role("link", name="Stop…").click()
    p.wait_for_url(f"**/ui/tasks/{task_id}/stop")
    p.screenshot(path=str(artifacts / "confirm-stop.png"))
    p.get_by_role("button", name="Stop task").click()
    p.wait_for_url("**/ui/tasks")
    assert page.errors == []
    page.close()


def test_hosts_page(browser: Any, server: BackgroundServer, artifacts: Path) -> None:
    page = Page(browser, server)
    page.page.get_by_role("link", name="Hosts").click()
    page.page.wait_for_url("**/ui/hosts")
    assert page.page.locator("#single-host").count() == 1
    page.page.screenshot(path=str(artifacts / "hosts.png"))
    assert page.errors == []
    page.close()
