"""Move a training run between machines in slices: pack a workdir's latest checkpoint (and the
files that describe the run) into one archive, unpack it into a workdir elsewhere, and continue.

    python -m experiments.pack_run --workdir runs/l3c_paper --out l3c_paper.tar          # pack
    python -m experiments.pack_run --unpack l3c_paper.tar --workdir runs/l3c_paper       # unpack

The archive holds ``config.json``, ``metrics.jsonl``, ``metrics.discarded.jsonl``, ``lineage.json``
(those present) and only the latest ``checkpoints/<step>/`` (parameters, optimizer state and
step: all a resumed run needs; batches depend only on the step, so the continued run is the one
an uninterrupted run would have been). Older checkpoints and TensorBoard logs stay behind. Packing refuses to replace an
existing archive (``--force`` does) and to write the archive inside the run it packs (even with
``--force``: it could replace the run's own files); a missing folder of ``--out`` is made.
Unpacking refuses a workdir that is not empty (it would mix two runs or replace their files), any
archive member outside the run's files or that is not a plain file or folder, and an archive
without ``config.json`` or without a complete checkpoint. It unpacks into a hidden folder inside
the workdir and moves the files into place only once everything is out (the checkpoint last), so
a refused or damaged archive leaves no half-unpacked run for the next training command to resume;
an existing empty workdir (a link to scratch space, a mount point) is kept as it is.
The recipe for an accelerator with a per-command time limit is in docs/l3c.md
("Training on an accelerator, in slices").

A driver's workdir (``experiments.ban``, ``strassen_nets``, ``dplc_sweep``, ``dplc_generators``,
``understanding``, ``ecg_cv``: many training runs below one folder, stopped by their ``*.time_limit``) packs the
same way: every run below it (a folder with ``config.json``) travels with its files and its latest
complete checkpoint only, every other file of the tree (the drivers' cached scores, decodings and
reports) as it is, and neither TensorBoard logs nor XLA compilation caches (``jax_cache``). The
archive lists its runs and their steps in ``packed_tree.json``; unpacking checks that each run's
checkpoint is the listed, complete one, then the same driver command continues on the new machine.

    python -m experiments.pack_run --workdir runs/ban_wrn --out ban_wrn.tar             # a driver's tree
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

from jaxcomp.files import CHECKPOINT_COMMIT_MARKERS, LOCK_FILE, atomic_file, latest_complete_checkpoint

RUN_FILES = ("config.json", "metrics.jsonl", "metrics.discarded.jsonl", "lineage.json")
STAGING_PREFIX = ".unpacking-"  # unpack's hidden folder inside the workdir, until everything is out
TREE_MANIFEST = "packed_tree.json"  # at the root of the archive of a driver's workdir: its runs and steps
NOT_CARRIED = ("tensorboard", "jax_cache")  # folders of a tree left behind (logs; machine-local compiled code)


class PackError(Exception):
    pass


def latest_checkpoint(workdir: str) -> str:
    """The name (the step, as a string) of the newest complete checkpoint of ``workdir``."""
    step = latest_complete_checkpoint(workdir)  # an unfinished save (no commit marker) is skipped
    if step is None:
        raise PackError(f"no complete checkpoint in {os.path.join(workdir, 'checkpoints')}")
    return str(step)


def _complete(names: set[str], step_dir: str) -> bool:
    """Whether a checkpoint folder (its member paths ``names``) holds orbax's commit marker."""
    return any(f"{step_dir}/{marker}" in names for marker in CHECKPOINT_COMMIT_MARKERS)


def tree_files(root: str) -> tuple[dict[str, int | None], list[str]]:
    """What :func:`pack` carries of a driver's workdir ``root``: ``({run: step}, [file])``, paths
    relative to ``root`` (``/``-separated). A run is a folder below ``root`` with ``config.json``;
    its step is its newest complete checkpoint (``None``: none yet, so it starts again), the only
    checkpoint that travels. Other files travel as they are, except those under ``tensorboard`` /
    ``jax_cache`` folders, an unpack's staging folder, the trainer's lock files (``train.lock``), and
    links or special files."""
    runs: dict[str, int | None] = {}
    files: list[str] = []
    for here, dirs, names in os.walk(root):
        rel = os.path.relpath(here, root).replace(os.sep, "/")
        rel = "" if rel == "." else rel + "/"
        dirs[:] = sorted(d for d in dirs if d not in NOT_CARRIED and not d.startswith(STAGING_PREFIX))
        parent = rel[:-len("/checkpoints/")]
        if os.path.basename(here) == "checkpoints" and parent in runs:
            dirs[:] = []  # pack adds the run's one checkpoint folder; other files here belong to other saves
            continue
        if rel and "config.json" in names:
            runs[rel[:-1]] = latest_complete_checkpoint(here)
        files.extend(rel + n for n in sorted(names) if n != LOCK_FILE
                     and os.path.isfile(os.path.join(here, n)) and not os.path.islink(os.path.join(here, n)))
    return runs, files


def pack(workdir: str, out: str, force: bool = False) -> tuple[str, int]:
    """Writes the archive; returns ``(the step packed, the archive's size in bytes)``; for a
    driver's workdir (runs below it, see :func:`tree_files`) the first item is ``"N runs"``.

    Raises:
      PackError: ``workdir`` is neither a run with a complete checkpoint nor a folder with runs
        below it, or ``out`` exists and ``force`` is False.
    """
    if os.path.exists(out) and not force:
        raise PackError(f"{out} exists: choose another name, or pass --force to replace it")
    run, target = os.path.realpath(workdir), os.path.realpath(out)
    if os.path.commonpath([run, target]) == run:
        raise PackError(f"{out} is inside the run it packs ({workdir}); write the archive elsewhere")
    single = os.path.isfile(os.path.join(workdir, "config.json"))
    runs, files = ({}, []) if single else tree_files(workdir)  # (a missing folder: no runs)
    if not single and not runs:
        raise PackError(f"{workdir} is not a training workdir (no config.json) nor a driver's folder of runs")
    step = latest_checkpoint(workdir) if single else f"{len(runs)} runs"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not single:
        manifest = json.dumps({"format": 1, "runs": runs}, indent=1, sort_keys=True).encode()
        with atomic_file(out) as f, tarfile.open(fileobj=f, mode="w") as tar:
            info = tarfile.TarInfo(TREE_MANIFEST)
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
            for name in files:
                tar.add(os.path.join(workdir, name), arcname=name, recursive=False)
            for name, at in runs.items():
                if at is not None:
                    tar.add(os.path.join(workdir, name, "checkpoints", str(at)), arcname=f"{name}/checkpoints/{at}")
        return step, os.path.getsize(out)
    with atomic_file(out) as f, tarfile.open(fileobj=f, mode="w") as tar:
        for name in RUN_FILES:
            if os.path.exists(os.path.join(workdir, name)):
                tar.add(os.path.join(workdir, name), arcname=name)
        tar.add(os.path.join(workdir, "checkpoints", step), arcname=f"checkpoints/{step}")
    return step, os.path.getsize(out)


def unpack(archive: str, workdir: str) -> str:
    """Unpacks into ``workdir`` (created; if it exists it must be empty); returns the step it holds
    (a driver's tree: ``"N runs"``)."""
    if os.path.isdir(workdir):  # an unpack killed midway (a per-command time limit) leaves its staging folder
        for name in os.listdir(workdir):
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        ckpt = os.path.join(workdir, "checkpoints")
        what = "already has checkpoints" if os.path.isdir(ckpt) and os.listdir(ckpt) else (
            "is not empty" if os.path.isdir(workdir) else "is a file")
        raise PackError(f"{workdir} {what}: unpack into an empty or new workdir")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            names = {m.name for m in members}
            if TREE_MANIFEST in names:
                what = _check_tree(archive, tar, members, names)
            else:
                steps = {m.name.split("/")[1] for m in members
                         if m.name.startswith("checkpoints/") and m.name.count("/")}
                bad = [m.name for m in members if not (m.name in RUN_FILES or m.name == "checkpoints"
                                                       or m.name.startswith("checkpoints/"))
                       or ".." in m.name.split("/") or m.issym() or m.islnk()]
                if bad or len(steps) != 1 or not next(iter(steps)).isdigit():
                    raise PackError(f"{archive} is not a packed run (unexpected members: {bad[:3] or sorted(steps)})")
                if "config.json" not in names or not _complete(names, f"checkpoints/{next(iter(steps))}"):
                    raise PackError(f"{archive} is not a complete packed run (no config.json or no finished "
                                    f"checkpoint in it)")
                what = next(iter(steps))
            special = [m.name for m in members if not (m.isfile() or m.isdir())]
            if special:
                raise PackError(f"{archive} holds members that are not plain files or folders ({special[:3]}): "
                                f"not a packed run")
            made = not os.path.exists(workdir)
            os.makedirs(workdir, exist_ok=True)  # an existing empty one (a link, a mount point) stays itself
            staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=workdir)
            moved: list[str] = []
            try:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and odd modes as well
                    tar.extractall(staging, members=members, filter="data")
                else:
                    tar.extractall(staging, members=members)
                if os.path.exists(os.path.join(staging, TREE_MANIFEST)):
                    os.remove(os.path.join(staging, TREE_MANIFEST))
                # the run's files first, the checkpoint last: a training command never sees a
                # checkpoint without its config
                for name in sorted(os.listdir(staging), key=lambda n: n == "checkpoints"):
                    os.replace(os.path.join(staging, name), os.path.join(workdir, name))
                    moved.append(name)
                os.rmdir(staging)
            except BaseException:
                for name in moved:  # the workdir was empty: what is in it now came from this archive
                    target = os.path.join(workdir, name)
                    if os.path.isdir(target):
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        os.remove(target)
                shutil.rmtree(staging, ignore_errors=True)
                if made and not os.listdir(workdir):
                    os.rmdir(workdir)
                raise
    except (tarfile.TarError, EOFError) as e:
        raise PackError(f"{archive} is not a readable archive (truncated or corrupt?): {e}") from e
    return what


def _check_tree(archive: str, tar: tarfile.TarFile, members: list[tarfile.TarInfo], names: set[str]) -> str:
    """The checks of a driver's packed tree before anything is extracted: relative paths only, a
    readable manifest, and per listed run its ``config.json`` and exactly the listed, complete
    checkpoint (links and special members are refused by :func:`unpack` for both kinds of archive).
    Returns ``"N runs"``."""
    bad = [m.name for m in members if m.name.startswith("/") or ".." in m.name.split("/")]
    if bad:
        raise PackError(f"{archive} is not a packed run (members outside the tree: {bad[:3]})")
    try:
        manifest = json.loads(tar.extractfile(TREE_MANIFEST).read())
        runs = dict(manifest["runs"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PackError(f"{archive}: unreadable {TREE_MANIFEST} ({e})") from None
    for run, step in runs.items():
        if f"{run}/config.json" not in names:
            raise PackError(f"{archive} is not a complete packed tree: run {run!r} has no config.json")
        found = {m.name.split("/")[run.count("/") + 2] for m in members
                 if m.name.startswith(f"{run}/checkpoints/") and m.name.count("/") > run.count("/") + 1}
        if found != (set() if step is None else {str(step)}) or (
                step is not None and not _complete(names, f"{run}/checkpoints/{step}")):
            raise PackError(f"{archive} is not a complete packed tree: run {run!r} lists checkpoint {step}, "
                            f"holds {sorted(found) or 'none'}" + ("" if step is None else " (or it is unfinished)"))
    return f"{len(runs)} runs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help="pack WORKDIR into this archive")
    group.add_argument("--unpack", help="unpack this archive into WORKDIR (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out archive")
    args = parser.parse_args(argv)
    try:
        if args.out:
            step, size = pack(args.workdir, args.out, force=args.force)
        else:
            step = unpack(args.unpack, args.workdir)
        what = step if step.endswith("runs") else f"step {step}"
        if args.out:
            print(f"packed {what} of {args.workdir} into {args.out} ({size / 2 ** 20:.1f} MiB)")
        else:
            print(f"unpacked {what} into {args.workdir}: run the same command to continue")
    except (PackError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
