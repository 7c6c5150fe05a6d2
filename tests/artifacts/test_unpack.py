"""safe_unpack / inspect_archive: extraction is all-or-nothing and never leaves the target folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiot.artifacts import UnpackError, UnpackLimits, inspect_archive, safe_unpack
from tests.artifacts.zipkit import DIRECTORY, FIFO, REGULAR, SYMLINK, RawEntry, build_zip, write, zip_bytes


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every path under root -> (kind, content), without following links."""
    found: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path).encode())
            elif path.is_dir():
                found[rel] = ("dir", b"")
            else:
                found[rel] = ("file", path.read_bytes())
    return found


def test_good_archive_is_extracted(tmp_path: Path) -> None:
    files = {"model.json": "{}", "pkg/__init__.py": "", "pkg/weights.bin": bytes(range(256)) * 10}
    target = tmp_path / "out"
    made = safe_unpack(write(tmp_path, zip_bytes(files)), target)
    assert sorted(p.relative_to(target).as_posix() for p in made) == sorted(files)
    for name, content in files.items():
        expected = content.encode() if isinstance(content, str) else content
        assert (target / name).read_bytes() == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_directory_entries_and_empty_target_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    archive = write(tmp_path, build_zip([RawEntry("data/", mode=DIRECTORY), RawEntry("data/a.txt", b"a")]))
    made = safe_unpack(archive, target)
    assert made == [target / "data" / "a.txt"]
    assert (target / "data" / "a.txt").read_bytes() == b"a"


def test_non_empty_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("keep")
    with pytest.raises(UnpackError) as err:
        safe_unpack(write(tmp_path, zip_bytes({"a.txt": "a"})), target)
    assert err.value.problems[0].code == "target_exists"
    assert snapshot(target) == {"old.txt": ("file", b"keep")}


def test_failure_while_streaming_leaves_nothing(tmp_path: Path) -> None:
    """A CRC/size mismatch is only seen while extracting: the files already written must vanish."""
    entries = [RawEntry(f"f{i}.txt", b"fine" * 100) for i in range(5)]
    entries.append(RawEntry("z.bin", b"\1" * 50_000, declared_size=100))
    archive = write(tmp_path, build_zip(entries))
    before = snapshot(tmp_path)
    with pytest.raises(UnpackError) as err:
        safe_unpack(archive, tmp_path / "out")
    assert err.value.problems[0].code == "corrupt_zip"
    assert snapshot(tmp_path) == before


def test_streamed_bytes_are_capped(tmp_path: Path) -> None:
    archive = write(tmp_path, zip_bytes({"a.bin": os.urandom(30_000), "b.bin": os.urandom(30_000)}))
    with pytest.raises(UnpackError) as err:
        safe_unpack(archive, tmp_path / "out", UnpackLimits(max_file_bytes=20_000))
    assert {p.code for p in err.value.problems} == {"too_large"}
    assert not (tmp_path / "out").exists()


def test_ratio_bomb_rejected_before_writing(tmp_path: Path) -> None:
    archive = write(tmp_path, zip_bytes({"bomb.bin": b"\0" * (8 * 1024 * 1024)}))
    assert archive.stat().st_size < 20_000
    listing = inspect_archive(archive)
    assert [p.code for p in listing.problems] == ["zip_bomb"]
    with pytest.raises(UnpackError):
        safe_unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_file_used_as_folder_is_a_conflict(tmp_path: Path) -> None:
    archive = write(tmp_path, build_zip([RawEntry("a", b"file"), RawEntry("a/b.txt", b"x")]))
    assert "path_conflict" in [p.code for p in inspect_archive(archive).problems]


def test_inspect_lists_entries(tmp_path: Path) -> None:
    listing = inspect_archive(write(tmp_path, zip_bytes({"a.txt": "abc", "d/b.txt": "defg"})))
    assert listing.ok
    assert listing.files == ["a.txt", "d/b.txt"]
    assert [e.size for e in listing.entries] == [3, 4]


# --------------------------------------------------------------------------- property test

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "a",
            "b",
            "x.py",
            "C:",
            "c:\\x",
            "\\",
            "..\\..",
            "\x00",
            "~",
            "{ROOT}",
            "ü",
            "日本",
            "\u202e",
            "CON",
            " ",
            "a\x00/..",
            "...",
            "\u0130",
            "ı",
            "A",
            "%2e%2e",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6),
)
WILD_NAME = st.tuples(
    st.sampled_from(["", "", "", "/", "//", "\\", "./", "../"]),
    st.lists(SEGMENT, min_size=1, max_size=4),
    st.booleans(),
).map(lambda t: t[0] + "/".join(t[1]) + ("/" if t[2] else ""))
TAME_NAME = st.lists(
    st.sampled_from(["a", "b", "x.py", "ü", "日本", "data", "A", "...", "~"]), min_size=1, max_size=3
).map("/".join)
NAME = st.one_of(TAME_NAME, WILD_NAME)
ENTRY = st.tuples(NAME, st.sampled_from([REGULAR] * 6 + [0, SYMLINK, DIRECTORY, FIFO]), st.binary(max_size=32))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(ENTRY, min_size=1, max_size=5), target_exists=st.booleans())
def test_safe_unpack_never_writes_outside_target(entries: list[tuple[str, int, bytes]], target_exists: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outer = root / "outer"
        (outer / "sub").mkdir(parents=True)
        (outer / "keep.txt").write_text("keep")
        target = outer / "sub" / "target"
        if target_exists:
            target.mkdir()
        names = [name.replace("{ROOT}", str(root)) for name, _, _ in entries]
        archive = root / "in.zip"
        archive.write_bytes(build_zip([RawEntry(n, d, mode=m) for n, (_, m, d) in zip(names, entries, strict=True)]))
        before = snapshot(root)
        try:
            made = safe_unpack(archive, target)
        except UnpackError as exc:
            event("rejected")
            assert exc.problems
            # Nothing new anywhere: not in the target, not beside it, not above it.
            assert snapshot(root) == before
            return
        event("extracted")
        assert not any(n.startswith("/") or ".." in n.split("/") or "\x00" in n for n in names)
        after = snapshot(root)
        target_rel = target.relative_to(root).as_posix()
        for rel, value in after.items():
            if rel in before:
                assert before[rel] == value or rel == target_rel, rel
            else:
                assert rel == target_rel or rel.startswith(target_rel + "/"), f"wrote outside target: {rel}"
                assert value[0] != "link"
        real_target = os.path.realpath(target)
        for path in made:
            assert os.path.realpath(path).startswith(real_target + os.sep)
            assert path.is_file() and not path.is_symlink()
