"""The jaxcomp bitstream container.

Layout (all integers little-endian)::

    magic   4 bytes  b"JXC\\x00"
    version u8       FORMAT_VERSION
    codec   u8       codec id (1 = L3C, ...)
    model   16 bytes fingerprint of the model (parameters + architecture)
    meta    u32 length + UTF-8 JSON (image shape, padding, tiling, pixel checksum, ...)
    n       u16      number of payloads
    sizes   n x u32  payload lengths in bytes
    payloads
    crc     u32      CRC-32 of everything before it

:func:`unpack` checks, in this order, the magic, the version, the codec, the length (a
truncated or extended file), the CRC (bit flips) and the model fingerprint, and raises a
:class:`BitstreamError` subclass that says which check failed.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

MAGIC = b"JXC\x00"
FORMAT_VERSION = 1
CODEC_IDS = {"l3c": 1, "cpm": 2, "gc": 3, "dplc": 4}
_HEAD = struct.Struct("<4sBB16sI")


class BitstreamError(ValueError):
    """A file that is not a valid jaxcomp bitstream for this model."""


class TruncatedError(BitstreamError):
    pass


class ChecksumError(BitstreamError):
    pass


class UnsupportedError(BitstreamError):
    pass


class ModelMismatchError(BitstreamError):
    pass


#: payloads a bitstream can hold (their count is a 16-bit field)
MAX_PAYLOADS = 0xFFFF


def fingerprint(params: Any, architecture: dict[str, Any]) -> bytes:
    """16-byte digest of every parameter (path, shape, dtype, bytes) and the architecture."""
    h = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode())
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])):
        arr = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.digest()[:16]


def pack(codec: str, model: bytes, meta: dict[str, Any], payloads: Sequence[bytes]) -> bytes:
    """Serialises a bitstream; ``payloads`` are opaque byte strings, at most :data:`MAX_PAYLOADS`
    (``ValueError`` beyond: codecs check their tile count against it before coding)."""
    if codec not in CODEC_IDS:
        raise ValueError(f"unknown codec {codec!r}; the container knows {sorted(CODEC_IDS)}")
    if not isinstance(model, bytes) or len(model) != 16:  # struct would pad or cut it without a word
        raise ValueError(f"the model fingerprint is 16 bytes (see fingerprint()), got "
                         f"{len(model) if isinstance(model, bytes) else type(model).__name__}")
    if any(not isinstance(p, (bytes, bytearray)) for p in payloads):  # a uint32 array: len counts words
        kinds = sorted({type(p).__name__ for p in payloads if not isinstance(p, (bytes, bytearray))})
        raise ValueError(f"payloads must be bytes, got {', '.join(kinds)} (an entropy coder's uint32 words: "
                         f"pass words.tobytes())")
    if len(payloads) > MAX_PAYLOADS:
        raise ValueError(f"a bitstream holds at most {MAX_PAYLOADS} payloads, got {len(payloads)}: "
                         f"use larger tiles or split the image")
    try:
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    except TypeError as e:  # e.g. a NumPy array or integer in meta
        raise ValueError(f"bitstream meta must be JSON data (numbers, strings, lists, dicts): {e}") from e
    parts = [_HEAD.pack(MAGIC, FORMAT_VERSION, CODEC_IDS[codec], model, len(meta_bytes)), meta_bytes,
             struct.pack("<H", len(payloads)), struct.pack(f"<{len(payloads)}I", *map(len, payloads)), *payloads]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def _as_bytes(data: Any) -> bytes:
    """``data`` as ``bytes`` (a ``bytearray`` or ``memoryview`` is copied); ``TypeError`` otherwise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a bitstream is bytes (or a bytearray or memoryview), not {type(data).__name__}")


def peek(data: bytes) -> tuple[str, bytes]:
    """``(codec name, model fingerprint)`` from a bitstream's header, without further checks.

    Raises :class:`BitstreamError` if ``data`` does not start like a jaxcomp bitstream, ``TypeError``
    if it is not bytes-like.
    """
    data = _as_bytes(data)
    if len(data) < _HEAD.size or bytes(data[:4]) != MAGIC:
        raise BitstreamError("not a jaxcomp bitstream (too short, wrong magic bytes)")
    _, version, codec_id, model_fp, _ = _HEAD.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise UnsupportedError(f"bitstream format version {version}; this jaxcomp reads version {FORMAT_VERSION}")
    names = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in names:
        raise UnsupportedError(f"bitstream was written by an unknown codec (id {codec_id})")
    return names[codec_id], bytes(model_fp)


def unpack(data: bytes, codec: str, model: bytes | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """Parses and checks a bitstream; returns ``(meta, payloads)``.

    Raises:
      BitstreamError (or a subclass) naming what is wrong with ``data``; ``TypeError`` if it is not
      bytes-like (``bytes``, ``bytearray``, ``memoryview``).
    """
    data = _as_bytes(data)
    if model is not None and not isinstance(model, bytes):
        raise TypeError(f"model is a 16-byte fingerprint (bytes) or None, not {type(model).__name__}")
    if len(data) < _HEAD.size:
        if MAGIC.startswith(bytes(data[:4])) and len(data) > 0:
            raise TruncatedError(f"bitstream truncated: {len(data)} bytes is shorter than the header")
        raise BitstreamError("not a jaxcomp bitstream (too short, wrong magic bytes)")
    magic, version, codec_id, model_fp, meta_len = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError("not a jaxcomp bitstream (wrong magic bytes)")
    if version != FORMAT_VERSION:
        raise UnsupportedError(f"bitstream format version {version}; this jaxcomp reads version {FORMAT_VERSION}")
    names = {v: k for k, v in CODEC_IDS.items()}
    if codec not in CODEC_IDS:
        raise ValueError(f"unknown codec {codec!r}; the container knows {sorted(CODEC_IDS)}")
    if codec_id != CODEC_IDS[codec]:
        raise UnsupportedError(f"bitstream was written by codec {names.get(codec_id, codec_id)!r}, not {codec!r}")
    pos = _HEAD.size
    try:
        meta_bytes = data[pos : pos + meta_len]
        pos += meta_len
        (n,) = struct.unpack_from("<H", data, pos)
        pos += 2
        sizes = struct.unpack_from(f"<{n}I", data, pos)
        pos += 4 * n
    except struct.error as e:
        raise TruncatedError("bitstream truncated inside its header") from e
    expected = pos + sum(sizes) + 4
    if len(data) < expected:
        raise TruncatedError(f"bitstream truncated: {len(data)} bytes, the header announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"bitstream has {len(data) - expected} unexpected trailing bytes")
    (crc,) = struct.unpack_from("<I", data, expected - 4)
    if zlib.crc32(data[: expected - 4]) != crc:
        raise ChecksumError("bitstream is corrupt (checksum mismatch)")
    if model is not None and model_fp != model:
        raise ModelMismatchError(
            f"bitstream was written with another model (fingerprint {model_fp.hex()}, this model {model.hex()}); "
            "decode it with the checkpoint it was compressed with (--checkpoint)")
    try:
        meta = json.loads(meta_bytes.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BitstreamError("bitstream metadata is unreadable") from e
    if not isinstance(meta, dict):  # every codec writes an object; a list or number is no jaxcomp stream's
        raise BitstreamError(f"bitstream metadata is not an object (a {type(meta).__name__})")
    payloads, pos2 = [], pos
    for size in sizes:
        payloads.append(bytes(data[pos2 : pos2 + size]))
        pos2 += size
    return meta, payloads
