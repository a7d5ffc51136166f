"""What every JSON object tftpdiag writes must be, whatever a peer or a trace sent: text UTF-8 can hold."""

from __future__ import annotations

__all__ = ["assert_valid_text"]


def assert_valid_text(value: object) -> None:
    """Every string of a JSON value is text UTF-8 can hold: no lone surrogate, which jq would turn into
    U+FFFD and a Python consumer could not write (bytes that are not UTF-8 follow fmt.storable's rule)."""
    if isinstance(value, str):
        value.encode("utf-8")  # strict: raises on a lone surrogate
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_valid_text(k)
            assert_valid_text(v)
    elif isinstance(value, list):
        for v in value:
            assert_valid_text(v)
