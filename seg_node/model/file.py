"""Reading a model file, with an optional integrity check."""

from __future__ import annotations

import hashlib
from pathlib import Path


class ModelFileError(RuntimeError):
    """The model file is missing, unreadable or not the expected one."""


def read_verified(path: str, expected_sha256: str = '') -> bytes:
    """The bytes of ``path``; raise if it is missing or its SHA-256 differs from the expected."""
    file = Path(path).expanduser()
    if not file.is_file():
        msg = f'model file {path!r} does not exist'
        raise ModelFileError(msg)
    try:
        data = file.read_bytes()
    except OSError as err:
        msg = f'model file {path!r} cannot be read ({err.strerror})'
        raise ModelFileError(msg) from None
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256.lower():
            msg = f'model file {path!r} has SHA-256 {actual}, not the expected {expected_sha256}'
            raise ModelFileError(msg)
    return data
