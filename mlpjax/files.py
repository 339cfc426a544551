"""Crash-safe files: atomic writes and checksummed msgpack containers.

A file written by :func:`write_checked` is ``MAGIC + sha256(body) + body``, written
to a temporary file in the same directory, fsync'ed, then renamed over the target
(``os.replace`` is atomic on POSIX). A reader therefore sees either the old file or
the complete new one; a file truncated or corrupted some other way fails the
checksum and raises :class:`CorruptFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import flax.serialization
import numpy as np

_HASH_BYTES = 32


class CorruptFileError(IOError):
    """A model or checkpoint file that is truncated, corrupted or not an mlpjax file."""



def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (provenance of data and model files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _to_numpy(tree: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(x) if hasattr(x, "shape") else x, tree)


def write_checked(path: str | os.PathLike, magic: bytes, payload: dict) -> None:
    """Serialise ``payload`` (nested dicts of arrays, numbers, strings) atomically with a checksum."""
    body = flax.serialization.msgpack_serialize(_to_numpy(payload))
    atomic_write_bytes(path, magic + hashlib.sha256(body).digest() + body)


def read_checked(path: str | os.PathLike, magic: bytes, what: str) -> dict:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {path} does not exist") from None
    if not data:
        raise CorruptFileError(f"{what} file {path} is empty (an interrupted write?); use an earlier copy or retrain")
    if not data.startswith(magic):
        raise CorruptFileError(f"{path} is not an mlpjax {what} file (wrong header)")
    digest = data[len(magic) : len(magic) + _HASH_BYTES]
    body = data[len(magic) + _HASH_BYTES :]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptFileError(
            f"{what} file {path} is truncated or corrupted (checksum mismatch, {len(data)} bytes); "
            "use an earlier copy or retrain"
        )
    return flax.serialization.msgpack_restore(body)
