"""What a broken connection is said as (a red-team run: a stalled registry was
"connection dropped: TimeoutError" after minutes, and plain HTTP to a TLS port a bare
"ConnectionResetError")."""

from __future__ import annotations

import socket

from ctrconv.registry.client import _dropped


def test_a_stalled_registry_is_said_to_have_timed_out() -> None:
    for inner in (TimeoutError(), socket.timeout()):
        error = _dropped("reg:5000", "https://reg:5000/v2/x/manifests/1", inner, 60.0)
        assert str(error) == "reg:5000: no answer within 60 s (timed out)"


def test_plain_http_reset_by_the_port_hints_at_tls() -> None:
    error = _dropped("reg:5000", "http://reg:5000/v2/", ConnectionResetError(), 60.0)
    assert str(error) == "reg:5000: connection dropped: ConnectionResetError"
    assert error.hint is not None and "--plain-http" in error.hint
    assert _dropped("reg:5000", "https://reg:5000/v2/", ConnectionResetError(), 60.0).hint is None
