"""``deployinc.io.atomic``: the order of the durable steps (data on disk before any name points at it)."""

from __future__ import annotations

import os
import stat

import pytest

from deployinc.io import atomic


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, _probed: None) -> list[str]:
    """Every fsync (of a file or a folder), link and rename/replace the writers make, in order."""
    seen: list[str] = []
    real_fsync, real_link, real_replace, real_rename = os.fsync, os.link, os.replace, os.rename

    def fsync(fd: int) -> None:
        seen.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def link(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        seen.append("link-tmp" if str(src).startswith("/proc/self/fd/") else "link")
        return real_link(src, dst, *a, **k)

    def replace(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        seen.append("replace")
        return real_replace(src, dst, *a, **k)

    def rename(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        seen.append("rename")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return seen


@pytest.fixture(autouse=True)
def _probed(tmp_path):
    """Whether the folder's file system links O_TMPFILE files is probed once per device (a link of its own): done
    before the writes recorded here."""
    atomic._tmpfile_linkable(tmp_path)


def _placements(seen: list[str]) -> list[int]:
    return [i for i, c in enumerate(seen) if c in ("link", "replace", "rename", "link-tmp")]


def test_a_new_file_is_fsynced_before_any_name_points_at_it(tmp_path, calls):
    atomic.atomic_write_bytes(tmp_path / "a.bin", b"x" * 100)
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 100
    first_sync = calls.index("fsync-file")
    assert _placements(calls) and first_sync < min(_placements(calls)), calls
    assert calls[-1] == "fsync-dir"  # the folder's entry made durable last


def test_a_replaced_file_is_fsynced_before_the_rename(tmp_path, calls):
    (tmp_path / "a.bin").write_bytes(b"old")
    atomic.atomic_write_bytes(tmp_path / "a.bin", b"new", force=True)
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert "replace" in calls and calls.index("fsync-file") < min(_placements(calls)), calls
    assert calls[-1] == "fsync-dir"


def test_a_unit_fsyncs_every_file_before_placing_any(tmp_path, calls):
    (tmp_path / "b.bin").write_bytes(b"old")
    atomic.atomic_write_many([(tmp_path / "a.bin", b"1"), (tmp_path / "b.bin", b"2"), (tmp_path / "c.bin", b"3")], force=True)
    assert [(tmp_path / n).read_bytes() for n in ("a.bin", "b.bin", "c.bin")] == [b"1", b"2", b"3"]
    syncs = [i for i, c in enumerate(calls) if c == "fsync-file"]
    # the targets' placements (replace); the backup link of the old b.bin and the temporaries' own names may come
    # between the writes, but each file is synced before the temporary name it gets from /proc/self/fd
    places = [i for i, c in enumerate(calls) if c == "replace"]
    assert len(syncs) == 3 and len(places) == 3 and max(syncs) < min(places), calls
    tmp_links = [i for i, c in enumerate(calls) if c == "link-tmp"]
    assert all(any(s < t for s in syncs) for t in tmp_links), calls
    assert calls[-1] == "fsync-dir"
