"""jaxcomp.files: files are written whole or not at all, and nothing temporary is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from jaxcomp import files


def _names(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_write_atomic_writes_bytes_and_text_with_the_usual_permissions(tmp_path):
    files.write_atomic(tmp_path / "a.bin", b"\x00\xffab")
    files.write_atomic(tmp_path / "b.txt", "line\r\nünï\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffab"
    assert (tmp_path / "b.txt").read_bytes() == "line\r\nünï\n".encode()  # UTF-8, newlines untouched
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o666 & ~umask
    files.write_atomic(tmp_path / "sub" / "c.bin", b"x", private=True, makedirs=True)
    assert stat.S_IMODE((tmp_path / "sub" / "c.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o700 & ~umask
    assert _names(tmp_path) == ["a.bin", "b.txt", "sub"]
    with pytest.raises(FileNotFoundError, match=r"missing/d\.bin'$"):  # the file asked for, not a temporary
        files.write_atomic(tmp_path / "missing" / "d.bin", b"x")
    with pytest.raises(ValueError, match="mode"):
        with files.atomic_file(tmp_path / "e.bin", "ab"):
            pass


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path, error):
    path = tmp_path / "model.msgpack"
    path.write_bytes(b"the earlier model")
    with pytest.raises(error):
        with files.atomic_file(path) as f:
            f.write(b"half of the new")
            assert path.read_bytes() == b"the earlier model", "the file is replaced only at the end"
            raise error("stopped while writing")
    assert path.read_bytes() == b"the earlier model"
    assert _names(tmp_path) == ["model.msgpack"]


def test_a_file_that_cannot_be_replaced_raises_and_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "out.l3c"
    path.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["out.l3c"]


def test_two_writers_of_one_path_do_not_mix(tmp_path):
    path = tmp_path / "same.bin"
    with files.atomic_file(path) as a, files.atomic_file(path) as b:
        a.write(b"A" * 1000)
        b.write(b"B" * 10)
        assert len(_names(tmp_path)) == 2, "each writer has its own temporary file"
    # b closes first, then a: the file is one writer's bytes, whole
    assert path.read_bytes() == b"A" * 1000 and _names(tmp_path) == ["same.bin"]


def test_a_line_torn_by_a_killed_writer_costs_only_that_line(tmp_path):
    path = tmp_path / "results.jsonl"
    files.append_jsonl(path, [{"fold": 0, "f1": 0.5}, {"fold": 1, "f1": 0.25}])
    assert [r["fold"] for r in files.read_jsonl(path)] == [0, 1]
    with open(path, "a") as f:
        f.write('{"fold": 2, "f1": 0.')  # killed in the middle of a line: no newline
    files.append_jsonl(path, [{"fold": 3, "f1": 0.75}])
    assert path.read_text().splitlines()[2:] == ['{"fold": 2, "f1": 0.', '{"fold": 3, "f1": 0.75}']
    with pytest.warns(UserWarning, match=r"results\.jsonl, line 3: not a JSON record .* skipped: \{\"fold\": 2"):
        assert files.read_jsonl(path) == [{"fold": 0, "f1": 0.5}, {"fold": 1, "f1": 0.25}, {"fold": 3, "f1": 0.75}]
    with open(path, "a") as f:  # blank lines and JSON that is not a record
        f.write("\n[1, 2]\n")
    with pytest.warns(UserWarning) as caught:
        assert len(files.read_jsonl(path)) == 3
    assert [str(w.message).split(": not a JSON record")[0][-6:] for w in caught] == ["line 3", "line 6"]
    fresh = tmp_path / "new.jsonl"  # a new log, and one that is empty, get no leading newline
    with files.open_appending(fresh) as f:
        f.write("{}\n")
    files.append_jsonl(tmp_path / "empty.jsonl", [])
    files.append_jsonl(tmp_path / "empty.jsonl", [{"a": 1}])
    assert fresh.read_text() == "{}\n" and (tmp_path / "empty.jsonl").read_text() == '{"a": 1}\n'
    with pytest.raises(FileNotFoundError):
        files.read_jsonl(tmp_path / "missing.jsonl")


def test_load_npz_names_what_is_wrong_with_the_file(tmp_path):
    import numpy as np

    np.savez_compressed(tmp_path / "a.npz", x=np.arange(1000), y=np.ones(3))
    got = files.load_npz(tmp_path / "a.npz", ["y", "x"])
    assert list(got) == ["y", "x"] and got["x"].sum() == 499500
    whole = (tmp_path / "a.npz").read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30):  # cut in the data; cut in the zip's directory
        (tmp_path / "cut.npz").write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=r"cut\.npz: truncated or damaged \.npz"):
            files.load_npz(tmp_path / "cut.npz", ["x"])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"text\.npz: not an \.npz file"):
        files.load_npz(tmp_path / "text.npz", ["x"])
    with pytest.raises(ValueError, match=r"a\.npz: lacks \['z'\]; it has \['x', 'y'\]"):
        files.load_npz(tmp_path / "a.npz", ["x", "z"])
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz: holds object arrays"):
        files.load_npz(tmp_path / "objects.npz", ["x"])
    with pytest.raises(FileNotFoundError):
        files.load_npz(tmp_path / "missing.npz", ["x"])
