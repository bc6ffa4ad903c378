"""The record store every writing command shares: keys, settings, old rows, locking, repair, fsync."""

import json
import logging
import math
import os

import pytest

from qinsight_sdk.errors import QInsightError, UsageError
from qinsight_sdk.io import records
from qinsight_sdk.io.records import RecordFileError, key_of, make_row, open_store, read_store, row_text
from qinsight_sdk.judging.results import ScoreResult

FAST = {"model": "m", "mode": "fast"}


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_row_names_the_item_as_given_and_keys_it_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").touch()
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    row = make_row("score", ["./link.png"], FAST, {"score": 3.5, "error": None})
    assert row == {
        "task": "score",
        "key": str((tmp_path / "a.png").resolve()),
        "image": "./link.png",
        "settings": FAST,
        "score": 3.5,
        "error": None,
    }
    pair = make_row("comparison", ["r.png", "a.png", "b.png"], {}, {"winner": "A"})
    assert (pair["reference"], pair["image_a"], pair["image_b"]) == ("r.png", "a.png", "b.png")
    assert (
        pair["key"]
        == key_of("r.png", "a.png", "b.png")
        == "|".join(str(tmp_path / n) for n in ("r.png", "a.png", "b.png"))
    )
    assert make_row("comparison", ["a.png", "b.png"], {}, {})["reference"] is None


def test_rows_are_strict_json_and_readable_unless_a_name_is_not_utf8():
    assert row_text({"image": "é.png"}) == '{"image": "é.png"}'
    odd = os.fsdecode(b"bad_\xff.png")
    assert (
        row_text({"image": odd}) == '{"image": "bad_\\udcff.png"}'
        and json.loads(row_text({"image": odd}))["image"] == odd
    )
    with pytest.raises(ValueError):
        row_text({"score": math.nan})
    with pytest.raises(ValueError):
        row_text({"image": odd, "score": math.nan})


def test_written_rows_are_found_again_by_key(tmp_path):
    path = tmp_path / "out.jsonl"
    store = open_store(path, "score", FAST)
    store.write([str(tmp_path / "a.png")], {"score": 2.0, "error": None})
    store.write([str(tmp_path / "b.png")], {"score": None, "error": "broken"})
    store.close()
    again = open_store(path, "score", FAST)
    again.close()
    assert again.done(key_of(tmp_path / "a.png")) and again.done(key_of(tmp_path / "b.png"))
    assert not again.done(key_of(tmp_path / "c.png")) and again.failed() == 1


def test_retry_failed_forgets_error_rows_and_the_last_row_of_a_key_wins(tmp_path):
    path = tmp_path / "out.jsonl"
    a, b = key_of(tmp_path / "a.png"), key_of(tmp_path / "b.png")
    rows = [
        make_row("score", [str(tmp_path / n)], FAST, {"score": s, "error": e})
        for n, s, e in (("a.png", 1.0, None), ("b.png", None, "x"), ("a.png", 2.0, None))
    ]
    path.write_text(row_text(rows[0]) + "\n\n" + "".join(row_text(r) + "\n" for r in rows[1:]))  # a blank line too
    store = open_store(path, "score", FAST, retry_failed=True)
    assert [r["score"] for r in lines(path)] == [2.0]  # rewritten to one row per key, on disk before any write
    with pytest.raises(UsageError, match="being written"):
        read_store(path, "score")  # the new file is locked as the old one was
    store.close()
    assert list(store.rows) == [a] and store.rows[a]["score"] == 2.0 and not store.done(b)


def test_rows_made_another_way_are_refused_and_left_alone(tmp_path):
    path = tmp_path / "out.jsonl"
    store = open_store(path, "score", FAST)
    store.write([str(tmp_path / "a.png")], {"score": 2.0, "error": None})
    store.close()
    before = path.read_bytes()
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "score", {"model": "m", "mode": "reason"})
    assert str(refused.value) == (
        f"{path} holds rows made with other settings (mode: 'fast' there, 'reason' now): "
        "write to another file, or start afresh (--overwrite)"
    )
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "degradation", FAST)
    assert str(refused.value) == (
        f"{path} holds score rows, not degradation: write to another file, or start afresh (--overwrite)"
    )
    assert path.read_bytes() == before
    afresh = open_store(path, "score", {"model": "m", "mode": "reason"}, overwrite=True)
    assert path.read_bytes() == b"" and afresh.path == path
    afresh.write(["b.png"], {"score": 4.0})
    afresh.close()
    afresh.close()  # closing twice is harmless
    assert [(r["task"], r["settings"]["mode"]) for r in lines(path)] == [("score", "reason")]


def test_a_line_that_is_not_a_row_stops_with_its_line_number_and_loses_nothing(tmp_path):
    path = tmp_path / "out.jsonl"
    text = row_text(make_row("score", ["a.png"], FAST, {"score": 1.0})) + "\n[1, 2]\n"
    path.write_text(text)
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == (
        f"{path}:2: not a qinsight row ([1, 2]); remove that line, or start afresh (--overwrite)"
    )
    assert path.read_text() == text
    path.write_text(text.replace("[1, 2]", "{oops"))
    with pytest.raises(RecordFileError, match=r"out.jsonl:2: not a qinsight row \(Expecting property name"):
        open_store(path, "score", FAST)
    path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(RecordFileError, match=r"out.jsonl: not UTF-8 text \(invalid start byte at byte 0\)"):
        open_store(path, "score", FAST)


def test_rows_of_qinsight_0_1_are_converted_with_a_note(tmp_path, caplog):
    """Files the last release wrote still resume: score -o rows (keyed by image) and eval rows (keyed by
    paths relative to the image root, winners spelled "Image A")."""
    (tmp_path / "imgs").mkdir()
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"image": "imgs/a.png", "score": 3.0, "error": None}) + "\n")
    with caplog.at_level(logging.WARNING, logger="qinsight"):
        store = open_store(scores, "score", FAST, legacy_root=tmp_path)
    store.close()
    assert caplog.messages == [
        f"{scores}: 1 rows written by qinsight 0.1 (no settings recorded) are taken as made "
        "with this run's settings and converted to today's rows"
    ]
    assert lines(scores) == [
        {
            "task": "score",
            "image": "imgs/a.png",
            "score": 3.0,
            "error": None,
            "key": str(tmp_path / "imgs" / "a.png"),
            "settings": FAST,
        }
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"key": "r.png|a.png|b.png", "task": "comparison", "winner": "Image B"}) + "\n")
    store = open_store(pairs, "comparison", {}, legacy_root=tmp_path / "imgs")
    store.close()
    (row,) = store.rows.values()
    assert row["winner"] == "B" and row["key"] == key_of(*(tmp_path / "imgs" / n for n in ("r.png", "a.png", "b.png")))


@pytest.mark.parametrize(
    "written, winner", [("Image A", "A"), ("Image B", "B"), ("Similar", "similar"), ("A", "A"), (None, None)]
)
def test_old_winners_are_spelled_as_today(tmp_path, written, winner):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"key": "a.png|b.png", "winner": written}) + "\n")
    (row,) = read_store(path, "comparison", legacy_root=tmp_path).rows.values()
    assert row["winner"] == winner


def test_old_compare_and_score_rows_are_keyed_where_they_ran(tmp_path, monkeypatch, caplog):
    """compare -o and score -o rows named their images relative to the folder the command ran in."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps({"image_a": "a.png", "image_b": "b.png", "reference": "r.png", "winner": "A"})
        + "\n"
        + json.dumps({"image_a": "c.png", "image_b": "d.png", "reference": None, "winner": "B"})
        + "\n"
    )
    with caplog.at_level(logging.WARNING, logger="qinsight"):
        store = read_store(path, "comparison")
    assert list(store.rows) == [key_of("r.png", "a.png", "b.png"), key_of("c.png", "d.png")]
    assert list(store.rows)[1] == f"{tmp_path}/c.png|{tmp_path}/d.png" and store.path == path
    assert caplog.messages == [
        f"{path}: 2 rows written by qinsight 0.1 (no settings recorded) are taken as made with this run's settings"
    ]  # read only: nothing converted
    path.write_text(json.dumps({"score": 3.0}) + "\n")
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == f"{path}: a row without settings has no usable key (KeyError('image'))"


def test_todays_rows_are_read_as_they_are(tmp_path, caplog):
    path = tmp_path / "out.jsonl"
    store = open_store(path, "score", FAST)
    store.write(["a.png"], {"score": 1.0})
    store.close()
    before = path.stat().st_ino
    with caplog.at_level(logging.WARNING, logger="qinsight"):
        again = open_store(path, "score", FAST)
    again.close()
    assert caplog.messages == [] and path.stat().st_ino == before  # no note, not rewritten
    assert again.rows[key_of("a.png")]["settings"] == FAST


def test_a_torn_last_line_is_cut_even_inside_a_character(tmp_path):
    """Issue 10, defect 7."""
    path = tmp_path / "out.jsonl"
    good = row_text(make_row("score", ["a.png"], FAST, {"score": 1.0}))
    torn = row_text(make_row("score", ["é.png"], FAST, {"score": 2.0})).encode()
    path.write_bytes(good.encode() + b"\n" + torn[: torn.index("é".encode()) + 1])
    store = open_store(path, "score", FAST)
    store.write(["b.png"], {"score": 3.0})
    store.close()
    assert [r["image"] for r in lines(path)] == ["a.png", "b.png"]


def test_reading_only_repairs_nothing_and_takes_any_one_settings(tmp_path):
    path = tmp_path / "out.jsonl"
    text = row_text(make_row("score", ["a.png"], FAST, {"score": 1.0})) + "\n" + '{"task": "sc'
    path.write_text(text)
    store = read_store(path, "score")
    assert list(store.rows) == [key_of("a.png")] and path.read_text() == text  # a writer may be mid-line
    with pytest.raises(UsageError, match="opened for reading only"):
        store.write(["b.png"], {})
    with pytest.raises(RecordFileError, match=f"^{tmp_path / 'none.jsonl'}: no such predictions file"):
        read_store(tmp_path / "none.jsonl", "score")  # a mistyped name is not "no predictions"
    path.write_text(row_text(make_row("score", ["a.png"], FAST, {"score": None, "error": "broken"})) + "\n")
    assert read_store(path, "score").failed() == 1  # an error row is read as it is
    path.write_text("[]\n")
    with pytest.raises(RecordFileError, match=f"^{path}:1: not a qinsight row"):
        read_store(path, "score")
    path.write_bytes(b"\xff\n")
    with pytest.raises(RecordFileError, match=f"^{path}: not UTF-8 text"):
        read_store(path, "score")
    assert not (tmp_path / "none.jsonl").exists()


def test_a_second_writer_stops_at_once(tmp_path):
    """Issue 10, defect 6, at the store: the lock is held from open to close."""
    path = tmp_path / "out.jsonl"
    first = open_store(path, "score", FAST)
    with pytest.raises(UsageError, match="is being written by another qinsight run"):
        open_store(path, "score", FAST)
    with pytest.raises(UsageError, match="is being written by another qinsight run"):
        read_store(path, "score")
    first.close()
    open_store(path, "score", FAST).close()


def test_a_lock_won_on_a_file_that_was_replaced_meanwhile_is_taken_again(tmp_path, monkeypatch):
    """A run that rewrites the file replaces it; a writer that opened the old file just before must not
    append to the replaced one, where its rows would be lost."""
    path = tmp_path / "out.jsonl"
    path.write_text("")
    lock = records._try_lock
    replaced = []

    def replace_first(handle, exclusive):
        if not replaced:
            (tmp_path / "new").write_text("")
            os.replace(tmp_path / "new", path)
            replaced.append(1)
        return lock(handle, exclusive)

    monkeypatch.setattr(records, "_try_lock", replace_first)
    store = open_store(path, "score", FAST)
    store.write(["a.png"], {"score": 1.0})
    store.close()
    assert [r["score"] for r in lines(path)] == [1.0]


def test_rows_are_fsynced_a_second_apart_and_at_the_end(tmp_path, monkeypatch):
    synced, now = [], [100.0]
    monkeypatch.setattr(records.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(records.time, "monotonic", lambda: now[0])
    store = open_store(tmp_path / "out.jsonl", "score", FAST)
    store.write(["a.png"], {"score": 1.0})
    now[0] += 0.9
    store.write(["b.png"], {"score": 1.0})
    assert synced == []  # written, not yet synced
    now[0] += 0.1
    store.write(["c.png"], {"score": 1.0})
    assert len(synced) == 1
    now[0] += 0.5
    store.write(["d.png"], {"score": 1.0})
    assert len(synced) == 1  # the second counts from the last sync
    store.close()
    assert len(synced) == 2


@pytest.mark.parametrize(
    "where, message",
    [
        ("folder", "{} is a folder; name a file to write to"),
        ("file/below.jsonl", "cannot create the folder for {}: File exists"),
        ("gone", "cannot open {}: No such file or directory"),
    ],
)
def test_a_path_that_cannot_be_a_record_file_is_a_usage_error(tmp_path, where, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").touch()
    os.symlink(tmp_path / "nowhere" / "x.jsonl", tmp_path / "gone")  # a link into a missing folder
    with pytest.raises(QInsightError) as refused:
        open_store(tmp_path / where, "score", FAST)
    assert str(refused.value) == message.format(tmp_path / where)


def test_a_record_file_in_folders_that_do_not_exist_yet(tmp_path):
    open_store(tmp_path / "a" / "b" / "out.jsonl", "score", FAST).close()
    assert (tmp_path / "a" / "b" / "out.jsonl").exists()


def test_a_rewrite_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    text = json.dumps({"image": "a.png", "score": 1.0}) + "\n"  # an old row: opening it rewrites the file
    path.write_text(text)

    def full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "replace", full)
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == f"cannot rewrite {path}: No space left on device; it is left as it was"
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    monkeypatch.undo()
    open_store(path, "score", FAST).close()  # the lock was let go


class Trickle:
    """A file that takes at most three bytes per write, as an unbuffered write may (and complains when
    written to more often than the data needs, so a loop that never ends fails instead)."""

    def __init__(self, calls):
        self.data, self.calls = b"", calls

    def write(self, chunk):
        self.calls -= 1
        assert self.calls >= 0 and len(chunk), "written to after the data was all out"
        self.data += bytes(chunk[:3])
        return len(chunk[:3])


def test_every_byte_of_a_row_is_written_even_a_few_at_a_time():
    handle = Trickle(calls=4)
    records._append(handle, b"0123456789")
    assert handle.data == b"0123456789"


def test_readers_share_and_writers_exclude(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("")
    first, second = records._open_locked(path, exclusive=False), records._open_locked(path, exclusive=False)
    assert read_store(path, "score").rows == {}  # a reader while others read
    with pytest.raises(UsageError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == (
        f"{path} is being written by another qinsight run; wait for it to finish or write to another file"
    )
    first.close(), second.close()


def test_a_file_replaced_again_and_again_is_given_up_on(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    path.write_text("")
    lock = records._try_lock

    def replace_each_time(handle, exclusive):
        (tmp_path / "new").write_text("")
        os.replace(tmp_path / "new", path)
        return lock(handle, exclusive)

    monkeypatch.setattr(records, "_try_lock", replace_each_time)
    with pytest.raises(UsageError, match="keeps being replaced while qinsight opens it"):
        open_store(path, "score", FAST)


def test_a_rewrite_that_cannot_start_says_why(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    text = json.dumps({"image": "a.png", "score": 1.0}) + "\n"
    path.write_text(text)
    temporary = tmp_path / "out.jsonl.rewrite"
    temporary.write_text("")
    held = records._open_locked(temporary, exclusive=True)  # someone holds the rewrite's file
    with pytest.raises(UsageError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == f"{path} is being rewritten by another qinsight run; wait for it to finish"
    held.close()
    original_open = open

    def no_new_files(file, mode="r", *args, **kwargs):
        if str(file).endswith(".rewrite"):
            raise OSError(13, "Permission denied")
        return original_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(records, "open", no_new_files, raising=False)
    with pytest.raises(RecordFileError) as refused:
        open_store(path, "score", FAST)
    assert str(refused.value) == f"cannot rewrite {path}: Permission denied; it is left as it was"
    assert path.read_text() == text


def test_a_write_that_fails_says_so_and_keeps_the_rows_before(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    store = open_store(path, "score", FAST)
    store.write(["a.png"], {"score": 1.0})

    def full(handle, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records, "_append", full)
    with pytest.raises(RecordFileError) as refused:
        store.write(["b.png"], {"score": 2.0})
    assert str(refused.value) == (
        f"cannot write to {path}: No space left on device; the rows written before are "
        "kept, and rerunning the same command continues"
    )
    store.close()
    assert [r["image"] for r in lines(path)] == ["a.png"]


@pytest.mark.parametrize(
    "there, now, said",
    [
        (
            {"mode": "fast"},
            {"mode": "reason", "decoding": {"max_new_tokens": 512}},
            "mode: 'fast' there, 'reason' now; decoding not used there",
        ),
        ({"decoding": {"max_new_tokens": 512}}, {}, "decoding not used now"),
        (
            {"decoding": {"max_new_tokens": 512}, "dtype": "bfloat16"},
            {"decoding": {"max_new_tokens": 64}, "dtype": "float32"},
            "dtype: 'bfloat16' there, 'float32' now; decoding differs",
        ),
    ],
)
def test_a_refusal_names_each_setting_that_differs(there, now, said):
    assert records._differences(there, now) == said


def test_old_rows_are_keyed_from_the_folder_the_command_runs_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps({"image": "a.png", "score": 3.0, "error": None}) + "\n")
    written = open_store(path, "score", FAST)
    written.close()
    assert list(written.rows) == [str(tmp_path / "a.png")]
    assert list(read_store(path, "score").rows) == [str(tmp_path / "a.png")]


class FakeMsvcrt:
    """Windows' ``msvcrt.locking`` as record files use it, for a Linux run: a non-blocking exclusive lock
    held by the open handle until it closes, refused (OSError) while another handle holds it. It is kept
    with the real flock (per open file, let go on close, as Windows' locks are), taken before the test hides
    fcntl. A lock taken away from byte 0 is refused outright: it would exclude no other run."""

    LK_NBLCK = 2

    def __init__(self, fcntl):
        self.fcntl = fcntl

    def locking(self, fd, mode, nbytes):
        assert mode == self.LK_NBLCK and nbytes >= 1
        if os.lseek(fd, 0, os.SEEK_CUR) != 0:
            raise AssertionError("a lock away from byte 0 would exclude no other qinsight run")
        try:
            self.fcntl.flock(fd, self.fcntl.LOCK_EX | self.fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(13, "Permission denied") from None


@pytest.fixture
def on_windows(monkeypatch):
    """No fcntl, as on Windows, and the simulated msvcrt."""
    import fcntl
    import sys

    monkeypatch.setitem(sys.modules, "msvcrt", FakeMsvcrt(fcntl))
    monkeypatch.setitem(sys.modules, "fcntl", None)  # "import fcntl" raises ImportError


def test_on_windows_a_second_writer_and_a_reader_stop_at_once(tmp_path, on_windows):
    path = tmp_path / "out.jsonl"
    first = open_store(path, "score", FAST)
    first.write(["a.png"], ScoreResult(score=3.5).to_dict())  # a file with rows: opened for appending at its end
    for attempt in (lambda: open_store(path, "score", FAST), lambda: read_store(path, "score")):
        with pytest.raises(UsageError, match="is being written by another qinsight run"):
            attempt()
    first.close()
    store = open_store(path, "score", FAST)  # the lock went with the handle
    store.close()
    assert [row["score"] for row in read_store(path, "score").rows.values()] == [3.5]


def test_on_windows_readers_take_the_lock_briefly_so_a_writer_waits_for_none_of_them(tmp_path, on_windows):
    """Windows has no shared lock: a reader holds the byte while it reads, then lets go."""
    path = tmp_path / "out.jsonl"
    path.write_text("")
    reading = records._open_locked(path, exclusive=False)
    with pytest.raises(UsageError):
        records._open_locked(path, exclusive=False)
    reading.close()
    read_store(path, "score")
    open_store(path, "score", FAST).close()
