"""The API's memory of VM addresses: only known addresses, least recently used forgotten first."""

from __future__ import annotations

from corral.api.convert import Addresses


def test_remembers_known_addresses_and_forgets_the_least_recently_used() -> None:
    book = Addresses(limit=2)
    book.remember("a", None)  # not up yet: nothing to remember
    assert book.get("a") is None and len(book) == 0
    book.remember("a", "10.0.0.1")
    book.remember("b", "10.0.0.2")
    assert book.get("a") == "10.0.0.1"  # now the most recently used
    book.remember("c", "10.0.0.3")
    assert book.get("b") is None
    assert (book.get("a"), book.get("c"), len(book)) == ("10.0.0.1", "10.0.0.3", 2)
