"""The EFS file store on a real directory: digests, resumable partials, promotion, path safety."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2_downloader.adapters.store.efs import PARTIAL_SUFFIX, EfsFileStore, partial_name
from s2_downloader.domain.errors import FileStoreError, PartialInUse
from s2_downloader.domain.ports import FileKey, Files

KEY = FileKey(
    granule_id="S2A_MSIL1C_20200101T000000_N0208_R001_T01ABC_20200101T000000", filename="product.zip"
)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    """An empty directory standing in for the EFS mount."""
    path = tmp_path / "efs"
    path.mkdir()
    return path


@pytest.fixture
def store(mount: Path) -> EfsFileStore:
    """The file store on the mount."""
    return EfsFileStore(mount)


def _write_partial(store: EfsFileStore, key: FileKey, *chunks: bytes) -> str:
    with store.open_partial(key) as partial:
        for chunk in chunks:
            partial.write(chunk)
        return partial.hexdigest()


def _write_final(store: EfsFileStore, key: FileKey, *chunks: bytes) -> str:
    """Write a partial and promote it while it is open, as the use case does."""
    with store.open_partial(key) as partial:
        for chunk in chunks:
            partial.write(chunk)
        digest = partial.hexdigest()
        store.promote(key)
    return digest


def test_the_store_implements_the_files_port(store: EfsFileStore) -> None:
    """EfsFileStore is what the use case calls Files."""
    files: Files = store

    assert files is store


def test_final_digest_is_none_when_there_is_no_final_file(store: EfsFileStore, mount: Path) -> None:
    """Without a final file there is no digest, and asking creates nothing."""
    assert store.final_digest(KEY) is None
    assert [] == list(mount.iterdir())


def test_final_digest_streams_the_md5_of_a_file_larger_than_a_chunk(store: EfsFileStore, mount: Path) -> None:
    """The digest of a final file bigger than the read chunk is its MD5."""
    content = os.urandom(9 * 1024 * 1024 + 17)
    (mount / KEY.granule_id).mkdir()
    (mount / KEY.granule_id / KEY.filename).write_bytes(content)

    assert _md5(content) == store.final_digest(KEY)


def test_a_written_partial_hashes_what_it_holds(store: EfsFileStore) -> None:
    """Chunks written to a new partial give their size and MD5."""
    with store.open_partial(KEY) as partial:
        assert 0 == partial.size
        partial.write(b"hello ")
        partial.write(b"world")
        assert 11 == partial.size
        assert _md5(b"hello world") == partial.hexdigest()


def test_the_partial_lives_beside_the_final_path_under_a_dot_name(store: EfsFileStore, mount: Path) -> None:
    """The partial is .<filename>.partial in the granule directory; the final path stays absent."""
    _write_partial(store, KEY, b"data")

    expected = mount / KEY.granule_id / f".{KEY.filename}{PARTIAL_SUFFIX}"
    assert [expected] == list((mount / KEY.granule_id).iterdir())
    assert b"data" == expected.read_bytes()


def test_reopening_a_partial_resumes_with_its_digest_seeded(store: EfsFileStore) -> None:
    """A partial reopened after an interruption starts at its size and hashes old and new bytes."""
    head = os.urandom(5 * 1024 * 1024 + 3)
    _write_partial(store, KEY, head)

    with store.open_partial(KEY) as partial:
        resumed_at = partial.size
        partial.write(b"tail")
        digest = partial.hexdigest()

    assert len(head) == resumed_at
    assert _md5(head + b"tail") == digest


def test_restart_drops_what_the_partial_held(store: EfsFileStore) -> None:
    """After restart the partial is empty and hashes only what is written next."""
    _write_partial(store, KEY, b"stale bytes")

    with store.open_partial(KEY) as partial:
        partial.restart()
        assert 0 == partial.size
        partial.write(b"fresh")
        digest = partial.hexdigest()
        store.promote(KEY)

    assert _md5(b"fresh") == digest
    assert b"fresh" == store.final_path(KEY).read_bytes()


def test_promote_moves_the_partial_onto_the_final_path(store: EfsFileStore) -> None:
    """The final path holds nothing until promote, then the partial's bytes, and the partial is gone."""
    with store.open_partial(KEY) as partial:
        partial.write(b"verified content")
        digest = partial.hexdigest()
        assert not store.final_path(KEY).exists()

        store.promote(KEY)

    assert b"verified content" == store.final_path(KEY).read_bytes()
    assert not store.partial_path(KEY).exists()
    assert digest == store.final_digest(KEY)


def test_promote_without_a_partial_is_a_file_store_error(store: EfsFileStore) -> None:
    """Promoting when nothing was written raises FileStoreError naming the partial."""
    with pytest.raises(FileStoreError, match=r"\.product\.zip\.partial"):
        store.promote(KEY)


def test_the_partial_file_is_closed_whatever_happens_inside(store: EfsFileStore) -> None:
    """Leaving the context by an exception still closes the file descriptor."""
    before = _open_fds()

    def write_then_fail() -> None:
        with store.open_partial(KEY) as partial:
            partial.write(b"x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()

    assert before == _open_fds()


def test_a_filename_too_long_for_a_dot_name_still_gets_a_partial(store: EfsFileStore) -> None:
    """A 255-byte filename gets a hashed partial name and still downloads and promotes."""
    key = FileKey(granule_id="g1", filename="p" * 251 + ".zip")

    _write_final(store, key, b"long")

    assert partial_name(key.filename).startswith(".")
    assert partial_name(key.filename).endswith(PARTIAL_SUFFIX)
    assert b"long" == store.final_path(key).read_bytes()


@pytest.mark.parametrize(
    "key",
    [
        FileKey(granule_id="..", filename="product.zip"),
        FileKey(granule_id="a/b", filename="product.zip"),
        FileKey(granule_id="g1", filename="../escape.zip"),
        FileKey(granule_id="g1", filename=".product.zip.partial"),
        FileKey(granule_id="g1", filename="bad\x00name"),
    ],
    ids=["dotdot-id", "slash-id", "dotdot-filename", "dot-filename", "nul-filename"],
)
def test_unsafe_keys_are_refused(store: EfsFileStore, mount: Path, key: FileKey) -> None:
    """An id or filename docs/interface.md forbids raises FileStoreError and writes nothing."""
    with pytest.raises(FileStoreError, match="unsafe"), store.open_partial(key):
        pass

    assert [] == list(mount.iterdir())


def test_an_id_directory_symlinked_out_of_the_mount_is_refused(
    store: EfsFileStore, mount: Path, tmp_path: Path
) -> None:
    """A granule directory that is a symlink to a directory outside the mount is never used."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / KEY.filename).write_bytes(b"not ours")
    (mount / KEY.granule_id).symlink_to(outside)

    with pytest.raises(FileStoreError, match="outside"), store.open_partial(KEY):
        pass
    with pytest.raises(FileStoreError, match="outside"):
        store.final_digest(KEY)
    with pytest.raises(FileStoreError, match="outside"):
        store.remove(KEY)

    assert [outside / KEY.filename] == list(outside.iterdir())
    assert b"not ours" == (outside / KEY.filename).read_bytes()


def test_a_symlink_planted_at_the_partial_name_is_not_followed(
    store: EfsFileStore, mount: Path, tmp_path: Path
) -> None:
    """A symlink at the partial's name raises FileStoreError and leaves its target untouched."""
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    (mount / KEY.granule_id).mkdir()
    store.partial_path(KEY).symlink_to(target)

    with pytest.raises(FileStoreError, match="symlink"), store.open_partial(KEY):
        pass

    assert b"precious" == target.read_bytes()


def test_remove_deletes_final_and_partial_and_the_empty_directory(store: EfsFileStore, mount: Path) -> None:
    """remove leaves no trace of the key, and a second remove is harmless."""
    _write_final(store, KEY, b"old")
    _write_partial(store, KEY, b"new")

    store.remove(KEY)
    store.remove(KEY)

    assert [] == list(mount.iterdir())


def test_remove_keeps_the_directory_while_it_holds_other_files(store: EfsFileStore) -> None:
    """Removing one product keeps another product of the same granule."""
    other = FileKey(granule_id=KEY.granule_id, filename="other.zip")
    _write_final(store, other, b"other")

    store.remove(KEY)

    assert b"other" == store.final_path(other).read_bytes()


def test_discard_partial_keeps_the_final_file_and_can_be_repeated(store: EfsFileStore) -> None:
    """discard_partial deletes only the partial; discarding again, or with none, is harmless."""
    _write_final(store, KEY, b"final")
    _write_partial(store, KEY, b"partial")

    store.discard_partial(KEY)
    store.discard_partial(KEY)

    assert not store.partial_path(KEY).exists()
    assert _md5(b"final") == store.final_digest(KEY)


def test_sweep_removes_only_stale_partials(mount: Path) -> None:
    """Old partials go; young partials, final files and other dot-files stay."""
    now = 1_900_000_000.0
    store = EfsFileStore(mount, stale_after_seconds=3600, clock=lambda: now)
    old, young, final = (FileKey(granule_id=f"g{n}", filename="p.zip") for n in range(3))
    for key in (old, young):
        _write_partial(store, key, b"bytes")
    _write_final(store, final, b"bytes")
    os.utime(store.partial_path(old), (now - 7200, now - 7200))
    os.utime(store.partial_path(young), (now - 60, now - 60))
    os.utime(store.final_path(final), (now - 7200, now - 7200))
    stray = mount / "g0" / ".keep"
    stray.write_bytes(b"")
    os.utime(stray, (now - 7200, now - 7200))

    removed = store.sweep_leftovers()

    assert 1 == removed
    assert not store.partial_path(old).exists()
    assert store.partial_path(young).exists()
    assert store.final_path(final).exists()
    assert stray.exists()


def test_the_sweep_in_steps_takes_one_granule_directory_each(mount: Path) -> None:
    """sweep_some_leftovers: one directory a call, round the mount; the stale partials of each go."""
    now = 1_900_000_000.0
    store = EfsFileStore(mount, stale_after_seconds=3600, clock=lambda: now)
    keys = [FileKey(granule_id=f"g{n}", filename="p.zip") for n in range(2)]
    for key in keys:
        _write_partial(store, key, b"bytes")
        os.utime(store.partial_path(key), (now - 7200, now - 7200))

    first = store.sweep_some_leftovers()
    left = sum(store.partial_path(key).exists() for key in keys)

    assert (1, 1) == (first, left)
    assert [1] == [n for n in (store.sweep_some_leftovers(), store.sweep_some_leftovers()) if n]
    assert not any(store.partial_path(key).exists() for key in keys)


def test_sweep_does_not_follow_a_symlinked_directory(mount: Path, tmp_path: Path) -> None:
    """A symlink in the mount to a directory elsewhere is not swept."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / ".p.zip.partial"
    victim.write_bytes(b"not ours")
    os.utime(victim, (0, 0))
    (mount / "g1").symlink_to(outside)

    assert 0 == EfsFileStore(mount, stale_after_seconds=1).sweep_leftovers()
    assert victim.exists()


def test_the_store_lists_no_leftovers_for_status(store: EfsFileStore) -> None:
    """status does not walk the mount: EFS reports no leftovers (its workers sweep them)."""
    _write_partial(store, KEY, b"left behind")

    assert store.leftovers(0) is None


def test_a_file_where_the_granule_directory_belongs_is_a_file_store_error(
    store: EfsFileStore, mount: Path
) -> None:
    """A regular file at <mount>/<id> makes open_partial raise FileStoreError naming the path."""
    (mount / KEY.granule_id).write_bytes(b"in the way")

    with pytest.raises(FileStoreError, match=KEY.granule_id) as caught, store.open_partial(KEY):
        pass

    assert isinstance(caught.value.__cause__, OSError)


def test_a_directory_at_the_final_path_is_a_file_store_error(store: EfsFileStore, mount: Path) -> None:
    """A directory where the final file belongs cannot be hashed and says so."""
    (mount / KEY.granule_id / KEY.filename).mkdir(parents=True)

    with pytest.raises(FileStoreError, match=KEY.filename):
        store.final_digest(KEY)


def test_a_missing_mount_is_a_file_store_error_and_is_not_created(tmp_path: Path) -> None:
    """A mount that does not exist (EFS not mounted) is an error, never silently created; a sweep skips it."""
    store = EfsFileStore(tmp_path / "not-mounted")

    with pytest.raises(FileStoreError, match="not-mounted"), store.open_partial(KEY):
        pass

    assert (0, 0) == (store.sweep_leftovers(), store.sweep_some_leftovers())
    assert not (tmp_path / "not-mounted").exists()


_Step = tuple[str, bytes]
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(max_size=5000)),
        st.tuples(st.sampled_from(["resume", "restart"]), st.just(b"")),
    ),
    max_size=20,
)


@given(steps=_steps)
def test_any_chunking_with_resumes_and_restarts_hashes_the_bytes_kept(steps: list[_Step]) -> None:
    """Whatever the chunks, resumes and restarts, digest and promoted file match the bytes kept."""
    expected = b""
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as opened:
        store = EfsFileStore(Path(directory))
        partial = opened.enter_context(store.open_partial(KEY))
        for action, chunk in steps:
            if action == "write":
                partial.write(chunk)
                expected += chunk
            elif action == "restart":
                partial.restart()
                expected = b""
            else:
                opened.close()
                partial = opened.enter_context(store.open_partial(KEY))
                assert len(expected) == partial.size
        digest = partial.hexdigest()
        size = partial.size
        store.promote(KEY)
        opened.close()

        assert _md5(expected) == digest
        assert len(expected) == size
        assert expected == store.final_path(KEY).read_bytes()


def test_a_partial_has_one_writer_at_a_time(store: EfsFileStore) -> None:
    """A second open of a partial that is being written is refused, in this process or another."""
    key = FileKey(granule_id="g1", filename="p.zip")
    with store.open_partial(key) as partial:
        partial.write(b"first writer")
        with pytest.raises(PartialInUse), store.open_partial(key):
            pass
        script = (
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", script, str(store.partial_path(key))], check=False)
        assert 3 == other.returncode
    with store.open_partial(key) as again:
        assert len(b"first writer") == again.size


def test_bytes_written_behind_the_handles_back_are_caught(store: EfsFileStore) -> None:
    """If anything else appends to the partial, hexdigest refuses rather than vouch for the file."""
    key = FileKey(granule_id="g1", filename="p.zip")
    with store.open_partial(key) as partial:
        partial.write(b"mine")
        with store.partial_path(key).open("ab") as intruder:
            intruder.write(b"theirs")
        with pytest.raises(FileStoreError):
            partial.hexdigest()


def test_large_partials_hash_in_the_background_correctly(store: EfsFileStore) -> None:
    """Past the first MiB hashing moves to its own thread; restart, resume and the digest still agree."""
    key = FileKey(granule_id="big", filename="b.zip")
    block = os.urandom(256 * 1024)
    with store.open_partial(key) as partial:
        for _ in range(8):
            partial.write(block)
        partial.restart()
        for _ in range(6):
            partial.write(block)
    with store.open_partial(key) as resumed:
        for _ in range(6):
            resumed.write(block[::-1])
        expected = hashlib.md5(block * 6 + block[::-1] * 6, usedforsecurity=False).hexdigest()
        assert expected == resumed.hexdigest()
    assert [] == [t.name for t in threading.enumerate() if t.name.startswith("md5-")]


def test_promote_of_a_partial_that_is_not_open_here_renames_nothing(store: EfsFileStore) -> None:
    """Promote needs the open descriptor that was hashed; a closed partial stays where it is."""
    _write_partial(store, KEY, b"hashed, then closed")

    with pytest.raises(FileStoreError, match="not open"):
        store.promote(KEY)

    assert (True, False) == (store.partial_path(KEY).exists(), store.final_path(KEY).exists())


def test_promote_refuses_when_the_path_names_another_file_than_the_one_hashed(store: EfsFileStore) -> None:
    """A partial unlinked and recreated by another attempt while this one wrote is not renamed into place."""
    with store.open_partial(KEY) as partial:
        partial.write(b"verified bytes")
        partial.hexdigest()
        # Another actor removes the path (a sweep, a remove) and a new attempt starts a
        # partial of its own there: flock is per inode, so both hold "the" lock.
        store.partial_path(KEY).unlink()
        store.partial_path(KEY).write_bytes(b"someone else's unverified bytes")

        with pytest.raises(PartialInUse, match="not the one hashed"):
            store.promote(KEY)

    assert not store.final_path(KEY).exists()
    assert b"someone else's unverified bytes" == store.partial_path(KEY).read_bytes()


def test_promote_refuses_when_the_partial_was_removed_while_open(store: EfsFileStore) -> None:
    """A partial whose path is gone is not promoted: FileStoreError, and no final file."""
    with store.open_partial(KEY) as partial:
        partial.write(b"bytes")
        store.partial_path(KEY).unlink()

        with pytest.raises(FileStoreError, match="removed"):
            store.promote(KEY)

    assert not store.final_path(KEY).exists()


def test_a_validator_is_stored_beside_the_partial_and_read_back_on_resume(store: EfsFileStore) -> None:
    """The validator set on a fresh partial is what a reopened partial reports, from a dot-dot sidecar."""
    with store.open_partial(KEY) as partial:
        assert partial.validator is None
        partial.set_validator('"etag-1"')
        partial.write(b"head")

    with store.open_partial(KEY) as resumed:
        validator = resumed.validator

    assert '"etag-1"' == validator
    assert f"..{KEY.filename}{PARTIAL_SUFFIX}" == store.sidecar_path(KEY).name
    assert b'"etag-1"' == store.sidecar_path(KEY).read_bytes()
    assert [] == [p.name for p in store.sidecar_path(KEY).parent.iterdir() if p.name.startswith("...")]


def test_an_empty_partial_reports_no_validator_and_none_removes_it(store: EfsFileStore) -> None:
    """A validator describes held bytes: an empty partial has none, and setting None deletes the sidecar."""
    with store.open_partial(KEY) as partial:
        partial.set_validator("Wed, 21 Oct 2015 07:28:00 GMT")
    with store.open_partial(KEY) as empty:
        assert empty.validator is None
        empty.set_validator(None)

    assert not store.sidecar_path(KEY).exists()


def test_a_sidecar_that_holds_no_validator_is_ignored(store: EfsFileStore) -> None:
    """Bytes that are no header value (binary, a newline, too long) are never handed back as a validator."""
    _write_partial(store, KEY, b"head")
    for junk in (b"\xff\xfe", b'"a"\r\nX-Evil: 1', b"x" * 2000):
        store.sidecar_path(KEY).write_bytes(junk)
        with store.open_partial(KEY) as partial:
            assert partial.validator is None


@pytest.mark.parametrize("finish", ["promote", "discard", "remove"])
def test_the_sidecar_goes_with_its_partial(store: EfsFileStore, mount: Path, finish: str) -> None:
    """Promote, discard and remove leave no validator behind."""
    with store.open_partial(KEY) as partial:
        partial.set_validator('"v"')
        partial.write(b"x")
        partial.hexdigest()
        if finish == "promote":
            store.promote(KEY)
    if finish == "discard":
        store.discard_partial(KEY)
    elif finish == "remove":
        store.remove(KEY)

    assert [] == [p.name for p in mount.rglob(".*")]


def test_a_filename_too_long_for_a_readable_sidecar_gets_a_hashed_one(store: EfsFileStore) -> None:
    """A 250-byte filename's sidecar and its temporary are both within the 255-byte name limit."""
    key = FileKey(granule_id="g1", filename="p" * 246 + ".zip")
    with store.open_partial(key) as partial:
        partial.set_validator('"v"')
        partial.write(b"x")
    with store.open_partial(key) as resumed:
        assert '"v"' == resumed.validator
    assert store.sidecar_path(key).name.startswith("..")
    assert store.sidecar_path(key).name.endswith(PARTIAL_SUFFIX)
    assert 255 >= len(store.sidecar_path(key).name) + 1


def test_the_sweep_takes_a_stale_sidecar_with_its_partial(mount: Path) -> None:
    """Sidecars are named like partials, so the sweep of stale partials removes them too."""
    now = 1_900_000_000.0
    store = EfsFileStore(mount, stale_after_seconds=3600, clock=lambda: now)
    with store.open_partial(KEY) as partial:
        partial.set_validator('"v"')
        partial.write(b"x")
    for path in (store.partial_path(KEY), store.sidecar_path(KEY)):
        os.utime(path, (now - 7200, now - 7200))

    assert 2 == store.sweep_leftovers()
    assert not store.sidecar_path(KEY).exists()
