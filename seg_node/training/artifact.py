"""``model.tar.gz`` artifacts: a seg_node model packed the way SageMaker moves models between jobs.

SageMaker hands a training job's ``/opt/ml/model`` folder on as ``model.tar.gz``, and takes one
back in the ``model`` channel for incremental training. What the built-in semantic segmentation
container puts inside is not documented (it is an MXNet/GluonCV model), so seg_node does not try
to write or read that; its artifact holds its own files beside a ``manifest.json`` that names them:

- ``manifest.json``: format, version, which file is the checkpoint (and ONNX model, and resumable
  checkpoint), their SHA-256, the network (algorithm, backbone, num_classes, crop_size, ...), the
  classes and the best epoch's metrics;
- ``model_best.pt`` (the checkpoint ``--init_checkpoint``, ``seg_export`` and ``seg_eval`` read);
- ``model.onnx`` when ``seg_export --model-tar`` wrote it;
- ``hyperparameters.json``: the training hyperparameters with SageMaker's names, values as strings.

seg_train also leaves ``manifest.json`` in its run folder, so a tarball SageMaker makes of that
folder is an artifact too (with ``checkpoint.pt``, which ``--resume`` can continue from). Files are
read into memory by name; nothing is extracted to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ['MANIFEST', 'Artifact', 'ArtifactError', 'is_artifact', 'manifest', 'read_artifact', 'write_artifact',
           'write_manifest']

MANIFEST = 'manifest.json'
FORMAT = 'seg_node.model'
VERSION = 1
ROLES = ('checkpoint', 'resume_checkpoint', 'onnx')
# Names that mark an MXNet model, as SageMaker's built-in (MXNet/GluonCV) algorithms save them.
_MXNET_SUFFIXES = ('.params', '-symbol.json', '.json.params')


class ArtifactError(ValueError):
    """A model.tar.gz is not a seg_node artifact, or is damaged; the message names the file."""


def is_artifact(path: str | Path) -> bool:
    """True when ``path`` is a tar archive (a torch checkpoint is a zip file, never a tar)."""
    try:
        return Path(path).is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(checkpoint: Mapping, files: Mapping[str, str], hashes: Mapping[str, str], *, writer: str,
             extra: Mapping[str, object] | None = None) -> dict:
    """The manifest of an artifact: ``files`` maps a role (``checkpoint``, ``onnx``...) to a file name."""
    hp = checkpoint.get('hyperparameters', {})
    network = {k: hp.get(k) for k in ('algorithm', 'backbone', 'num_classes', 'crop_size', 'output_stride',
                                      'decoder')}
    metrics = {k: v for k, v in checkpoint.get('metrics', {}).items() if k.startswith(('validation:', 'train:'))
               and not isinstance(v, dict)}
    return {'format': FORMAT, 'version': VERSION, 'written_by': writer,
            'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'files': dict(files), 'sha256': dict(hashes), 'network': network,
            'classes': list(checkpoint.get('classes', [])), 'epoch': checkpoint.get('epoch'),
            'metrics': metrics, **(extra or {})}


def write_manifest(folder: str | Path, checkpoint: Mapping, files: Mapping[str, str], *, writer: str) -> Path:
    """Write ``manifest.json`` for files already in ``folder`` (a run folder SageMaker may tar up)."""
    folder = Path(folder)
    hashes = {name: _sha256((folder / name).read_bytes()) for name in files.values()}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest(checkpoint, files, hashes, writer=writer), indent=1) + '\n')
    return path


def write_artifact(path: str | Path, checkpoint: Mapping, files: Mapping[str, tuple[str, bytes]], *, writer: str,
                   hyperparameters: Mapping[str, str] | None = None, extra: Mapping[str, object] | None = None) -> Path:
    """Write a model.tar.gz; ``files`` maps a role to (file name in the archive, content)."""
    unknown = sorted(set(files) - set(ROLES))
    if unknown or 'checkpoint' not in files:
        msg = f'an artifact needs a checkpoint and only the roles {ROLES}, got {sorted(files)}'
        raise ArtifactError(msg)
    names = {role: name for role, (name, _) in files.items()}
    hashes = {name: _sha256(data) for name, data in files.values()}
    members = {MANIFEST: (json.dumps(manifest(checkpoint, names, hashes, writer=writer, extra=extra), indent=1)
                          + '\n').encode()}
    members |= {name: data for name, data in files.values()}
    if hyperparameters is not None:
        members['hyperparameters.json'] = (json.dumps(dict(hyperparameters), indent=1) + '\n').encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial')
    # Weights barely compress: level 1 is several times faster than tarfile's default 9 for nearly the same size.
    with tarfile.open(partial, 'w:gz', compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(path)  # never leave a half-written artifact under the real name
    return path


@dataclass
class Artifact:
    """An opened model.tar.gz: its manifest, and its files read on demand and checked against it."""

    path: Path
    manifest: dict

    def has(self, role: str) -> bool:
        """Whether the artifact holds a file for ``role``."""
        return bool(self.manifest['files'].get(role))

    def read(self, role: str) -> bytes:
        """The content of the file of ``role``, checked against its SHA-256 in the manifest."""
        name = self.manifest['files'].get(role)
        if not name:
            msg = f'{self.path} holds no {role.replace("_", " ")} (its {MANIFEST} lists {self.manifest["files"]})'
            raise ArtifactError(msg)
        try:
            with tarfile.open(self.path, 'r:*') as tar:
                data = _member(tar, self.path, name)
        except (OSError, tarfile.TarError, EOFError) as err:
            msg = f'cannot read {name} from model artifact {self.path}: {err}'
            raise ArtifactError(msg) from None
        if _sha256(data) != self.manifest.get('sha256', {}).get(name):
            msg = f'{self.path}: {name} does not match its SHA-256 in {MANIFEST} (damaged or edited)'
            raise ArtifactError(msg)
        return data


def _member(tar: tarfile.TarFile, path: Path, name: str) -> bytes:
    try:
        info = tar.getmember(name)
    except KeyError:
        msg = f'{path} lists {name} in {MANIFEST} but does not hold it'
        raise ArtifactError(msg) from None
    handle = tar.extractfile(info) if info.isfile() else None
    if handle is None:
        msg = f'{path}: {name} is not a regular file'
        raise ArtifactError(msg)
    return handle.read()


def read_artifact(path: str | Path) -> Artifact:
    """Open a seg_node model.tar.gz; refuse anything else (an MXNet SageMaker model among them) in one sentence."""
    path = Path(path)
    try:
        with tarfile.open(path, 'r:*') as tar:
            names = tar.getnames()
            # A tarball of a folder may prefix every name with './'.
            prefix = './' if f'./{MANIFEST}' in names else ''
            text = _member(tar, path, f'{prefix}{MANIFEST}') if f'{prefix}{MANIFEST}' in names else None
    except (OSError, tarfile.TarError, EOFError) as err:
        msg = f'cannot read model artifact {path}: {err}'
        raise ArtifactError(msg) from None
    if text is None:
        mxnet = sorted(n for n in names if n.endswith(_MXNET_SUFFIXES))
        if mxnet:
            msg = (f'{path} holds an MXNet model ({", ".join(mxnet[:3])}), as SageMaker\'s built-in algorithm '
                   'writes it: it cannot be loaded without MXNet, which seg_node does not use')
        else:
            msg = (f'{path} holds no {MANIFEST}, so it is not a seg_node model artifact '
                   '(seg_train --model_tar writes one)')
        raise ArtifactError(msg)
    try:
        found = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f'{path}: {MANIFEST} is not valid JSON ({err})'
        raise ArtifactError(msg) from None
    if not isinstance(found, dict) or found.get('format') != FORMAT or not isinstance(found.get('files'), dict):
        msg = f'{path}: {MANIFEST} is not a {FORMAT} manifest'
        raise ArtifactError(msg)
    if not isinstance(found.get('version'), int) or found['version'] > VERSION:
        msg = f'{path} is a version {found.get("version")!r} artifact; this seg_node reads up to version {VERSION}'
        raise ArtifactError(msg)
    if prefix:
        found['files'] = {role: f'{prefix}{name}' for role, name in found['files'].items() if name}
        found['sha256'] = {f'{prefix}{name}': digest for name, digest in found.get('sha256', {}).items()}
    return Artifact(path, found)
