"""The API's memory of VM addresses (and connection details): only known addresses, least
recently used forgotten first."""

from __future__ import annotations

from corral.api.convert import Addresses


def test_remembers_known_addresses_and_forgets_the_least_recently_used() -> None:
    book = Addresses(limit=2)
    book.remember("a", None)  # not up yet: nothing to remember
    assert book.get("a") is None and len(book) == 0
    a, b, c = ("10.0.0.1", {"user": "root"}), ("10.0.0.2", {}), ("10.0.0.3", {})
    book.remember("a", a)
    book.remember("b", b)
    assert book.get("a") == a  # now the most recently used
    book.remember("c", c)
    assert book.get("b") is None
    assert (book.get("a"), book.get("c"), len(book)) == (a, c, 2)
