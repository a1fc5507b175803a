from __future__ import annotations

from corral import exceptions


def test_codes_are_unique_and_roundtrip() -> None:
    classes = [exceptions.CorralError, *exceptions._all_subclasses(exceptions.CorralError)]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), "every error class needs its own stable code"
    for cls in classes:
        err = exceptions.from_code(cls.code, "boom")
        assert type(err) is cls
        assert err.message == "boom"
        assert err.to_dict() == {"error": {"code": cls.code, "message": "boom"}}


def test_default_message_is_docstring() -> None:
    err = exceptions.LockTimeout()
    assert err.message == "The lock was not granted within the timeout."
    assert err.http_status == 408


def test_unknown_code_falls_back_to_base() -> None:
    err = exceptions.from_code("no_such_code", "x")
    assert type(err) is exceptions.CorralError
