"""Atomic writes: a file appears whole under its name or not at all, and no temporary is left."""

from __future__ import annotations

import pytest

from ftdyn import files


def test_atomic_path_renames_into_place_on_success(tmp_path):
    path = tmp_path / "new" / "table.csv"
    with files.atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".csv" and not path.exists()
        tmp.write_text("a,b\n")
    assert path.read_text() == "a,b\n" and list(path.parent.iterdir()) == [path]


def test_atomic_path_keeps_the_old_file_and_removes_the_temporary_on_failure(tmp_path):
    path = tmp_path / "figure.png"
    files.write_atomic(path, "old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
