"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): pages load
without console errors, a ticket created through the API appears without a reload, a VM is
terminated through the confirmation, a user does not see another owner's tickets. Screenshots of
every page go to ``$CORRAL_ARTIFACTS`` (default: a temporary directory, printed)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, auth, controller_class, make_config

from corral.api.server import BackgroundServer

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


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(), factory=controller_class().create) as running:
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
    """A browser page that records console errors and failed requests."""

    def __init__(self, browser: Any, server: BackgroundServer) -> None:
        self.context = browser.new_context(base_url=server.url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, token: str) -> None:
        self.page.goto("/ui/pools")
        assert "/ui/login" in self.page.url
        self.page.get_by_label("Token").fill(token)
        self.page.keyboard.press("Enter")  # the form works from the keyboard
        self.page.wait_for_url(lambda url: url.endswith("/ui/pools") and "login" not in url)

    def live(self) -> None:
        """Wait until the page's event stream is connected."""
        try:
            self.page.locator("#live.on").wait_for()
        except playwright_api.TimeoutError:
            status = self.page.locator("#live").inner_text()
            raise AssertionError(f"{self.page.url}: not live ({status}), {self.errors}") from None

    def close(self) -> None:
        self.context.close()


def _ticket(server: BackgroundServer, token: str) -> str:
    response = httpx.post(
        f"{server.url}/v1/tickets", json={"pool": "small"}, headers=auth(token), timeout=30
    )
    assert response.status_code == 201, response.text
    ticket_id: str = response.json()["id"]
    return ticket_id


def test_every_page_loads_without_console_errors(
    browser: Any, server: BackgroundServer, artifacts: Path
) -> None:
    page = Page(browser, server)
    page.login(ADMIN_TOKEN)
    for name in ("pools", "vms", "tickets", "tasks", "locks"):
        page.page.goto(f"/ui/{name}")
        page.live()
        assert page.page.locator("h1").inner_text().lower().startswith(name[:4])
        page.page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    page.page.goto("/docs")
    page.page.locator(".swagger-ui .opblock").first.wait_for()  # rendered from shipped assets
    page.page.screenshot(path=str(artifacts / "docs.png"))
    assert page.errors == []
    page.close()


def test_a_new_ticket_appears_without_a_reload(
    browser: Any, server: BackgroundServer, artifacts: Path
) -> None:
    page = Page(browser, server)
    page.login(ADMIN_TOKEN)
    page.page.goto("/ui/tickets")
    page.live()
    page.page.evaluate("window.__sameDocument = true")
    started = time.monotonic()
    ticket = _ticket(server, ALICE_TOKEN)
    page.page.locator(f'tr[data-ticket="{ticket}"]').wait_for()
    shown = time.monotonic() - started
    assert page.page.evaluate("window.__sameDocument") is True  # no reload happened
    page.page.screenshot(path=str(artifacts / "tickets-live.png"))
    print(f"ticket shown {shown * 1000:.0f} ms after it was created")
    httpx.post(f"{server.url}/v1/tickets/{ticket}/close", headers=auth(ADMIN_TOKEN), timeout=30)
    assert page.errors == []
    page.close()


def test_terminate_a_vm_through_the_confirmation(
    browser: Any, server: BackgroundServer, artifacts: Path
) -> None:
    page = Page(browser, server)
    page.login(ADMIN_TOKEN)
    page.page.goto("/ui/vms?state=ready")
    row = page.page.locator("tbody tr").first
    row.wait_for()
    name = row.get_attribute("data-vm")
    row.get_by_role("link", name="Terminate…").click()
    page.page.wait_for_url(f"**/ui/vms/{name}/terminate")
    page.page.screenshot(path=str(artifacts / "confirm.png"))
    page.page.get_by_role("button", name=f"Terminate {name}").click()
    page.page.wait_for_url(f"**/ui/vms/{name}")
    state = page.page.locator("#vm-state").inner_text()
    assert state in {"terminating", "terminated"}
    page.page.screenshot(path=str(artifacts / "vm.png"))
    assert page.errors == []
    page.close()


def test_a_user_sees_pools_but_not_another_owners_tickets(
    browser: Any, server: BackgroundServer, artifacts: Path
) -> None:
    bobs = _ticket(server, BOB_TOKEN)
    page = Page(browser, server)
    page.login(ALICE_TOKEN)
    assert page.page.locator('section[data-pool="small"]').count() == 1
    page.page.goto("/ui/tickets")
    page.live()
    mine = _ticket(server, ALICE_TOKEN)
    page.page.locator(f'tr[data-ticket="{mine}"]').wait_for()
    assert page.page.locator(f'tr[data-ticket="{bobs}"]').count() == 0
    assert bobs not in page.page.content()
    assert page.page.get_by_role("link", name="VMs").count() == 0
    page.page.screenshot(path=str(artifacts / "tickets-user.png"))
    for ticket in (bobs, mine):
        httpx.post(f"{server.url}/v1/tickets/{ticket}/close", headers=auth(ADMIN_TOKEN), timeout=30)
    assert page.errors == []
    page.close()
