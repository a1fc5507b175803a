"""The client's TLS settings per URL, and its lazy asyncio twin (issue 14, fast CLI)."""

from __future__ import annotations

import ssl
import subprocess
import sys

from corral.client import core


def test_https_urls_verify_with_the_default_authorities() -> None:
    """Fails when the shortcut for plain http is applied to https too."""
    assert core.verify("https://corral.example:8642") is True
    assert core.verify("HTTPS://corral.example") is True


def test_http_urls_skip_the_bundle_but_still_fail_closed() -> None:
    """Fails when the shortcut becomes ``verify=False``: a request that ever reached TLS through
    it would then accept any certificate, where this context refuses every one."""
    context = core.verify("http://127.0.0.1:8642")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0


def test_the_async_client_is_imported_on_first_use() -> None:
    """Fails when ``corral.client`` imports ``corral.client.aio`` (and so asyncio) eagerly, or
    when the lazy name stops resolving."""
    code = (
        "import sys, corral.client\n"
        "assert 'asyncio' not in sys.modules, 'asyncio loaded'\n"
        "from corral.client import AsyncClient\n"
        "from corral.client.aio import AsyncClient as Direct\n"
        "assert AsyncClient is Direct\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
