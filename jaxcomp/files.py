"""Writing a file whole or not at all.

Every file jaxcomp writes that a later run reads back (compressed streams, decoded images, model
files, stored executables, dataset caches, run archives) goes through :func:`atomic_file`: the
bytes go to a temporary file in the same folder, which replaces ``path`` only once it is complete
and flushed to disk. A crash, a full disk or an exception while writing leaves the earlier
``path`` (if any) untouched and no temporary file behind (except after a hard kill or power loss:
a hidden ``.NAME.<hex>.tmp`` beside it); two processes writing the same path at once each write
their own temporary file, and one complete file wins.

Replacing, not rewriting in place, means: a symbolic link at ``path`` is replaced by the file (its
target is left as it was), an existing file's permissions and hard links are not kept, and the
folder must be writable.

Logs that grow line by line (``metrics.jsonl``, ``results.jsonl``) cannot be replaced whole on
every line; they are appended with :func:`open_appending` / :func:`append_jsonl` and read with
:func:`read_jsonl`, which together keep a line torn by a killed writer from breaking the run that
reads or resumes the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import IO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, private: bool = False,
                makedirs: bool = False) -> Iterator[IO]:
    """A file object whose contents replace ``path`` when the ``with`` block ends without error.

    Leaving the block early (``return``, ``break``) also ends it without error: what was written
    so far becomes the file.

    Args:
      path: the file to write (its folder must exist unless ``makedirs``).
      mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8, no newline translation).
      private: create the file readable and writable by its owner only (0600), e.g. for files
        that are unpickled later; otherwise with the usual ``0666 & ~umask``.
      makedirs: create the folder first (with the usual permissions, or 0700 if ``private``).

    Raises:
      ValueError: for another ``mode``.
      OSError: if the folder cannot be written or the file cannot be replaced; ``path`` is then
        unchanged and the temporary file removed. An exception raised inside the block does the
        same and propagates.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes with mode 'wb' or 'w', not {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if makedirs:
        os.makedirs(folder, mode=0o700 if private else 0o777, exist_ok=True)
    for _ in range(100):  # a fresh name, created here and nowhere else (O_EXCL); the kernel applies the umask
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600 if private else 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:  # no folder, no permission: name the file asked for, not the temporary one
            raise type(e)(e.errno, e.strerror, path) from None
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path} (100 names taken)")
    try:
        text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself on disk (where folders can be opened)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, private: bool = False,
                 makedirs: bool = False) -> None:
    """Writes ``data`` (bytes, or str as UTF-8) to ``path`` whole or not at all (:func:`atomic_file`)."""
    with atomic_file(path, "w" if isinstance(data, str) else "wb", private=private, makedirs=makedirs) as f:
        f.write(data)


def read_run_config(workdir: str | os.PathLike) -> dict | None:
    """The ``config.json`` object a training run saved in ``workdir`` (``None`` if there is none); a
    ValueError naming the file if it is not JSON or not a JSON object."""
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: unreadable run config ({e})") from e
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: a run config is a JSON object, not {type(saved).__name__}")
    return saved


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> None:
    """``ValueError`` unless ``path`` is a folder or can become one (it does not exist, and neither
    does a file on its way): commands call it before they compute, so that an output folder named
    after a file fails at once, not after the work (as ``FileExistsError`` from ``os.makedirs``)."""
    path = os.path.abspath(os.fspath(path))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        where = "" if probe == path else f" ({probe} is a file)"
        raise ValueError(f"{flag} {os.fspath(path)} must be a folder{where}, and is not")


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """``ValueError`` unless ``path`` can be written as a file: not a folder, and its folder is one or can
    become one (:func:`check_output_folder`); called before the work that produces the file."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {os.fspath(path)} is a folder: give the file's path")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        check_output_folder(folder, flag)
    except ValueError as e:
        raise ValueError(f"{flag} {os.fspath(path)}: its folder {folder} cannot be made (a file is on its way)") from e


def open_appending(path: str | os.PathLike) -> IO[str]:
    """``path`` opened to append text lines (UTF-8; created if missing).

    If the file's last line has no newline (its writer was killed in the middle of a line), a
    newline is written first, so the torn line stays one unreadable line for :func:`read_jsonl`
    to skip instead of swallowing the next record.
    """
    path = os.fspath(path)
    torn = False
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    f = open(path, "a", encoding="utf-8")
    if torn:
        f.write("\n")
        f.flush()
    return f


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Appends ``records`` to the JSON-lines file ``path``, one line each, in one write."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    with open_appending(path) as f:
        f.write(text)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records (JSON objects, one per line) of the JSON-lines file ``path``, in order.

    Blank lines are skipped. A line that is not a whole JSON object (a writer killed in the middle
    of it, or a file edited by hand) is skipped with a ``UserWarning`` naming the file and line
    number, so a crash while logging never makes a run's records unreadable.

    Raises:
      OSError: if ``path`` cannot be read (``FileNotFoundError`` if it does not exist).
    """
    path = os.fspath(path)
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                shown = line.strip()
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                warnings.warn(f"{path}, line {number}: not a JSON record (a torn line from a killed run?), "
                              f"skipped: {shown}", stacklevel=2)
                continue
            records.append(record)
    return records


def load_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict:
    """The arrays ``keys`` of the ``.npz`` file ``path``, read into memory (``{key: numpy array}``).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: naming the file, for a file that is not an ``.npz`` (numpy's own message would
        speak of pickled data), a truncated or damaged one, one with object arrays, or one that
        lacks some of ``keys`` (the message lists what it has).
    """
    import numpy as np

    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise ValueError(f"{path}: not an .npz file (a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise KeyError(f"lacks {missing}; it has {sorted(f.files)}")
            return {k: np.asarray(f[k]) for k in keys}
    except KeyError as e:
        raise ValueError(f"{path}: {e.args[0]}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise ValueError(f"{path}: holds object arrays (pickled Python objects), which are not loaded") from e
        raise ValueError(f"{path}: truncated or damaged .npz ({type(e).__name__}: {e})") from e


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of the bytes of the file ``path``, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKPOINT_COMMIT_MARKERS = ("commit_success.txt", "_CHECKPOINT_METADATA")  # orbax writes one of them last
LOCK_FILE = "train.lock"  # in a workdir: locked by the one process training or evaluating it (jaxcomp.train)


def latest_complete_checkpoint(workdir: str | os.PathLike) -> int | None:
    """The step of the newest *finished* checkpoint in ``workdir/checkpoints/<step>/`` (one holding
    orbax's commit marker; an interrupted save has none), or ``None``. Reads folder names only,
    without JAX or orbax, so a command can refuse a workdir before it starts anything."""
    root = os.path.join(workdir, "checkpoints")
    steps = sorted((int(d) for d in os.listdir(root) if d.isdigit()), reverse=True) if os.path.isdir(root) else []
    for step in steps:
        if any(os.path.exists(os.path.join(root, str(step), m)) for m in CHECKPOINT_COMMIT_MARKERS):
            return step
    return None

