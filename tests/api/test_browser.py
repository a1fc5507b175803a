"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): pages load
without console errors, a ticket created through the API appears without a reload, a VM is
terminated through the confirmation, a user does not see another owner's tickets, every page meets
basic accessibility (labels, contrast, keyboard). Screenshots of every page go to
``$CORRAL_ARTIFACTS`` (default: a temporary directory, printed)."""

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


AUDIT = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const named = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest('label')
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!named) problems.push(`no label: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll('a[href], button')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label')))
      problems.push(`no name: ${el.outerHTML.slice(0, 80)}`);
  }
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || seen.has(el) || el.closest('svg')) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (!el.getClientRects().length || box.right < 0 || style.visibility === 'hidden') continue;
    const [a, b] = [lum(rgb(style.color)), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const text = node.textContent.trim().slice(0, 30);
    if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)}: ${el.tagName} ${text}`);
  }
  return problems;
}"""
"""Every form control labelled, every link and button named, and every text at a WCAG AA
contrast of 4.5:1 against the background it is drawn on (charts' SVG text aside)."""


def _tab_through(page: Any, limit: int = 80) -> list[str]:
    """Press Tab until the focus comes back round; each focused element's text, and an
    assertion that each shows a focus outline."""
    reached: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement; if (!e || e === document.body) return null;"
            " const s = getComputedStyle(e);"
            " return [e.textContent.trim() || e.getAttribute('name') || e.tagName,"
            " s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0]; }"
        )
        if focused is None:
            break
        text, outlined = focused
        assert outlined, f"no visible focus on {text!r}"
        if reached and text == reached[0]:
            break
        reached.append(text)
    return reached


def test_pages_meet_basic_accessibility(
    browser: Any, server: BackgroundServer, artifacts: Path
) -> None:
    """Catches a form control without a label, a link or button without a name, text below a
    4.5:1 contrast (say a muted grey on the grey table header), a focused element without a
    visible outline, and an action link the keyboard cannot reach."""
    page = Page(browser, server)
    page.page.goto("/ui/pools")
    assert page.page.evaluate(AUDIT) == [], "login page"
    page.login(ADMIN_TOKEN)
    page.page.goto("/ui/vms?state=ready")  # a ready VM for its page and confirmation page
    page.page.locator("tbody tr").first.wait_for()
    vm = page.page.locator("tbody tr").first.get_attribute("data-vm")
    for path in (
        "/ui/pools",
        "/ui/vms",
        "/ui/tickets",
        "/ui/tasks",
        "/ui/locks",
        "/ui/hosts",
        f"/ui/vms/{vm}",
        f"/ui/vms/{vm}/terminate",
        "/ui/pools/small/drain",
    ):
        page.page.goto(path)
        page.live()
        assert page.page.evaluate(AUDIT) == [], path
    page.page.goto("/ui/pools")
    page.live()
    reached = _tab_through(page.page)
    assert reached[0] == "Skip to content"  # the first Tab shows the skip link
    for name in ("Pools", "VMs", "Tickets", "Tasks", "Locks", "Hosts", "Drain…", "Log out"):
        assert name in reached, (name, reached)
    page.page.screenshot(path=str(artifacts / "pools-keyboard.png"), full_page=True)
    assert page.errors == []
    page.close()


def test_a_live_update_keeps_the_keyboard_focus(browser: Any, server: BackgroundServer) -> None:
    """Catches a live update (the page's content swapped in from the server) dropping the focus
    of a keyboard user to the top of the page: with pool counts every second, a keyboard could
    never reach a link on the Pools page."""
    page = Page(browser, server)
    page.login(ADMIN_TOKEN)
    page.live()
    drain = page.page.locator('a[href="/ui/pools/small/drain"]')
    for _ in range(40):
        page.page.keyboard.press("Tab")
        if drain.evaluate("a => a === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the pool's Drain… link")
    before = page.page.evaluate("() => document.getElementById('main').dataset.updated || ''")
    ticket = _ticket(server, ALICE_TOKEN)  # the pool's counts change: the page updates
    page.page.wait_for_function(
        "b => (document.getElementById('main').dataset.updated || '') !== b", arg=before
    )
    focused = page.page.evaluate("() => document.activeElement.getAttribute('href')")
    assert focused == "/ui/pools/small/drain"
    httpx.post(f"{server.url}/v1/tickets/{ticket}/close", headers=auth(ADMIN_TOKEN), timeout=30)
    assert page.errors == []
    page.close()
