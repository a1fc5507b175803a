"""Connection details beside a VM's address (issue 12): the script backend's ``new`` output,
the handle that keeps them, and their checks.

What each test catches: details lost between ``new``'s stdout and the handle, or between the
handle and its stored JSON (``to_json``/``from_json``); a handle stored before details existed
no longer readable; a malformed ``connection:`` line or a nested value accepted (a ticket would
then carry garbage) instead of failing the spawn with a message naming the line; noise lines
on stdout taken for details.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import connection
from corral.backends.base import Handle

from .conftest import spec
from .test_script import backend, script


def test_address_line_then_connection_lines() -> None:
    out = (
        "10.0.0.7\nsome noise: here\n"
        'connection: {"user": "root", "port": 2222}\n'
        'connection: {"host_key": "ssh-ed25519 AAAA"}\n'
    )
    assert connection.parse_new_output(out) == (
        "10.0.0.7",
        (("host_key", "ssh-ed25519 AAAA"), ("port", "2222"), ("user", "root")),
    )
    assert connection.parse_new_output("10.0.0.7\n") == ("10.0.0.7", ())


def test_one_json_object() -> None:
    out = '{"address": "vm7.example.org", "user": "fedora", "sudo": true}\n'
    assert connection.parse_new_output(out) == (
        "vm7.example.org",
        (("sudo", "true"), ("user", "fedora")),
    )


@pytest.mark.parametrize(
    ("stdout", "words"),
    [
        ("10.0.0.7\nconnection: user=root\n", "line 2: not JSON"),
        ("10.0.0.7\nconnection: [1]\n", "line 2: must be a JSON object"),
        ('10.0.0.7\nconnection: {"User": "x"}\n', "key 'User'"),
        ('10.0.0.7\nconnection: {"keys": ["a"]}\n', "'keys' must be a string"),
        ('{"user": "root"}', "'address' must be a string"),
        ("{not json", "not JSON"),
    ],
)
def test_malformed_details_are_refused(stdout: str, words: str) -> None:
    with pytest.raises(exceptions.InvalidInput, match=words):
        connection.parse_new_output(stdout)


def test_too_many_or_too_long() -> None:
    with pytest.raises(exceptions.InvalidInput, match="at most 16 keys"):
        connection.check({f"k{i}": "v" for i in range(17)})
    with pytest.raises(exceptions.InvalidInput, match="longer than"):
        connection.check({"key": "x" * (connection.MAX_VALUE + 1)})


def test_handle_keeps_details_and_reads_old_handles() -> None:
    handle = Handle("vm-1", ref="r", connection=(("port", "22"), ("user", "root")))
    text = handle.to_json()
    assert Handle.from_json(text) == handle
    assert connection.from_handle(text) == {"port": "22", "user": "root"}
    old = '{"name": "vm-1", "ref": "r"}'  # stored before connection details existed
    assert Handle.from_json(old).connection == ()
    assert Handle("vm-1", ref="r").to_json() == old
    assert connection.from_handle(old) == {} and connection.from_handle(None) == {}
    assert connection.from_handle("not json") == {}
    with pytest.raises(exceptions.InvalidInput, match="connection"):
        Handle.from_json('{"name": "vm-1", "ref": "r", "connection": {"x": [1]}}')


async def test_script_new_details_reach_the_handle(tmp_path: Path) -> None:
    new = script(
        tmp_path,
        "new.sh",
        'echo 10.9.8.7\necho \'connection: {"user": "builder", "port": 2022}\'\n',
    )
    handle = await backend(tmp_path, new=[new]).spawn(spec("vm-1"))
    assert dict(Handle.from_json(handle.to_json()).connection) == {
        "user": "builder",
        "port": "2022",
    }


async def test_script_new_with_a_bad_connection_line_fails_the_spawn(tmp_path: Path) -> None:
    new = script(tmp_path, "new.sh", "echo 10.9.8.7\necho 'connection: {oops'\necho why >&2\n")
    with pytest.raises(exceptions.BackendError, match=r"line 2: not JSON.*stderr: why"):
        await backend(tmp_path, new=[new]).spawn(spec("vm-1"))
