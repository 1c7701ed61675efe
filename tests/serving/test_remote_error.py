"""Errors cross the Ray/Modal boundary as typed values: every ServeError round-trips, an unknown kind is a 503."""

from __future__ import annotations

import json
import pickle

import cloudpickle
import pytest

from core.serving import errors
from core.serving.errors import BackendUnavailable, Overloaded, ServeError
from core.serving.remote import error_value, raise_error_value
from core.serving.remote_error import ERROR_CLASSES, ErrorKind, RemoteError


def serve_errors() -> list[type[ServeError]]:
    """ServeError and every subclass of it in core.serving.errors."""
    return [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, ServeError)]


def test_every_serve_error_has_exactly_one_kind() -> None:
    assert sorted(cls.__name__ for cls in ERROR_CLASSES.values()) == sorted(cls.__name__ for cls in serve_errors())
    assert {kind.value for kind in ErrorKind} == {cls.error_type for cls in serve_errors()}


TRANSPORTS = {
    "pickle (Ray)": lambda value: pickle.loads(pickle.dumps(value)),
    "cloudpickle (Modal)": lambda value: cloudpickle.loads(cloudpickle.dumps(value)),
    "plain data": lambda value: {"error": RemoteError.from_plain(json.loads(json.dumps(value["error"].to_plain())))},
    "plain data, raw": lambda value: {"error": json.loads(json.dumps(value["error"].to_plain()))},
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cls", serve_errors(), ids=lambda cls: cls.__name__)
def test_every_serve_error_round_trips_to_the_same_class_status_and_message(cls: type[ServeError], transport: str) -> None:
    sent = cls(f"{cls.__name__}: what went wrong", retry_after_s=2.5)
    answer = TRANSPORTS[transport](error_value(sent))
    with pytest.raises(ServeError) as raised:
        raise_error_value(answer)
    assert type(raised.value) is cls
    assert (raised.value.status_code, raised.value.error_type) == (cls.status_code, cls.error_type)
    assert (raised.value.message, raised.value.retry_after_s) == (sent.message, 2.5)


def test_an_answer_without_an_error_raises_nothing() -> None:
    raise_error_value({"prediction": [1.0], "cold_start": None})


@pytest.mark.parametrize("answer", [
    {"kind": "quota_exceeded", "message": "from a newer container"},
    {"kind": None, "message": "x"},
    {"kind": "overloaded", "message": 42},
    {"kind": "overloaded", "message": "x", "retry_after_s": -1},
    "overloaded",
])
def test_an_error_this_side_cannot_read_is_a_503_that_says_so(answer: object) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        raise_error_value({"error": answer}, worker="replica")
    assert raised.value.status_code == 503
    assert "the replica answered an error this server cannot read" in raised.value.message


def test_an_unknown_kind_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"remote error kind 'quota_exceeded'; allowed: one of internal_error, .*overloaded"):
        RemoteError.from_plain({"kind": "quota_exceeded", "message": "x"})


@pytest.mark.parametrize(("fields", "named"), [
    (("overloaded", "x"), "RemoteError.kind"),
    ((ErrorKind.OVERLOADED, None), "RemoteError.message"),
    ((ErrorKind.OVERLOADED, "x", float("nan")), "RemoteError.retry_after_s"),
    ((ErrorKind.OVERLOADED, "x", True), "RemoteError.retry_after_s"),
])
def test_a_remote_error_is_validated_when_built(fields: tuple, named: str) -> None:
    with pytest.raises((TypeError, ValueError), match=named):
        RemoteError(*fields)


def test_a_subclass_without_a_kind_travels_as_its_ancestor() -> None:
    class QueueFull(Overloaded):
        pass

    assert RemoteError.of(QueueFull("full", retry_after_s=1)) == RemoteError(ErrorKind.OVERLOADED, "full", 1)
    with pytest.raises(AttributeError):
        RemoteError(ErrorKind.OVERLOADED, "x").message = "y"  # type: ignore[misc]
