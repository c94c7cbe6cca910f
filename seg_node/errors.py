"""Turning exceptions into the one sentence an operator reads (no imports beyond the standard library)."""

from __future__ import annotations


def one_line(err: BaseException, *, last: bool = False) -> str:
    """The first (or ``last``) non-empty line of ``err``'s message, or its type name when it has none.

    Libraries such as ONNX Runtime and rosbags put the reason on the first or the last line of a
    multi-line message; a log line or a diagnostics value needs exactly one.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if last else lines[0]
