"""Generated datasets are written all at once: never half-written, never silently replacing a user's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon_plugin.data.synthetic.output import staged_output


def test_a_failing_writer_leaves_the_previous_folder_and_no_temporary_one(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with pytest.raises(RuntimeError, match="render failed"):
        with staged_output(out, overwrite=True) as tmp:
            (tmp / "part.txt").write_text("half")
            raise RuntimeError("render failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


def test_a_completed_writer_replaces_the_folder_with_exactly_its_files(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with staged_output(out, overwrite=True) as tmp:
        assert not (tmp / "old.txt").exists()
        (tmp / "new.txt").write_text("complete")
        assert not (out / "new.txt").exists()  # nothing reaches the target before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_a_non_empty_folder_or_a_file_is_refused_before_writing(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy: folder is not empty"):
        with staged_output(busy, overwrite=False):
            pytest.fail("the block must not run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="file: exists and is not a folder"):
        with staged_output(tmp_path / "file", overwrite=True):
            pytest.fail("the block must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file"]
