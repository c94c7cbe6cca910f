"""Finding and reading a model file, with an optional integrity check.

``model_path`` may be absolute, ``~/...``, ``package://<ros package>/<path in its share directory>``,
or relative. A relative path is looked up, in order, in the working directory, the user's model
directory (``$XDG_DATA_HOME/seg_node/models``, by default ``~/.local/share/seg_node/models``, where
the demo model is built), and ``share/seg_node/models`` of an installed seg_node package.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE_SCHEME = 'package://'
DEMO_MODEL = 'demo.onnx'
# How to get a model, appended to the sentence that says none was found.
HOW_TO_GET_ONE = ('build the demo model with "python3 -m seg_node.training.demo_model" (needs the train extra, '
                  'about 10 CPU minutes) or point model_path at an ONNX model')


class ModelFileError(RuntimeError):
    """The model file is missing, unreadable or not the expected one."""


def models_dir() -> Path:
    """The user's model directory: ``$XDG_DATA_HOME/seg_node/models`` (default ``~/.local/share/...``)."""
    data_home = os.environ.get('XDG_DATA_HOME') or str(Path.home() / '.local' / 'share')
    return Path(data_home) / 'seg_node' / 'models'


def package_share(package: str) -> Path | None:
    """The share directory of an installed ROS package (via the ament index), or None."""
    try:
        from ament_index_python.packages import (  # noqa: PLC0415 - only in ROS installs
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError, LookupError):
        return None


def search_dirs() -> list[Path]:
    """Where a relative model path is looked up, in order."""
    dirs = [Path.cwd(), models_dir()]
    share = package_share('seg_node')
    if share is not None:
        dirs.append(share / 'models')
    return dirs


def resolve_model_path(text: str) -> Path:
    """The file ``text`` names (see the module docstring); raise ModelFileError saying where it looked."""
    if not text.strip():
        msg = f'model_path is empty; {HOW_TO_GET_ONE}'
        raise ModelFileError(msg)
    if text.startswith(PACKAGE_SCHEME):
        package, _, inner = text[len(PACKAGE_SCHEME):].partition('/')
        share = package_share(package) if package else None
        if share is None:
            msg = (f'model path {text!r} names the ROS package {package!r}, which is not installed here '
                   '(source its workspace, or give a file path)')
            raise ModelFileError(msg)
        candidates = [share / inner]
    else:
        path = Path(text).expanduser()
        candidates = [path] if path.is_absolute() else [d / path for d in search_dirs()]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        if len(candidates) == 1:
            msg = f'model file {text!r} does not exist'
        else:
            looked = ', '.join(str(c) for c in candidates)
            msg = f'model file {text!r} was not found (looked in {looked}); {HOW_TO_GET_ONE}'
        raise ModelFileError(msg)
    if found.is_dir():
        msg = f'model path {text!r} is a directory ({found}), not an ONNX file; name the .onnx file inside it'
        raise ModelFileError(msg)
    return found


def read_verified(path: str | Path, expected_sha256: str = '') -> bytes:
    """The bytes of the model file ``path`` names; raise if it is missing or its SHA-256 differs from the expected."""
    file = resolve_model_path(str(path))
    try:
        data = file.read_bytes()
    except OSError as err:
        msg = f'model file {str(path)!r} cannot be read ({err.strerror})'
        raise ModelFileError(msg) from None
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256.lower():
            msg = f'model file {str(path)!r} has SHA-256 {actual}, not the expected {expected_sha256}'
            raise ModelFileError(msg)
    return data
