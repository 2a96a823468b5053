"""data_prep against hostile input: text that is not UTF-8; image paths to /dev/zero, FIFOs, folders,
over-large files and files outside --image-root; duplicate rows reported by data_prep.check.

Every refusal must name the row, the file and what to do, and leave no empty output folder. A FIFO
blocks whoever opens it for reading, so a test that finishes (under the alarm below) proves that
the FIFO was not opened.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import build_hostile_tree, write_jsonl

from data_prep import check, geo3k, jsonl
from data_prep.images import ImageSettings, prepare_image
from data_prep.pipeline import INVALID_REPORT, SKIPPED_REPORT, DataPrepError, run_main
from data_prep.records import REASONS, ImageSource, Problem

QUIET = ["--workers", "0", "--no-progress"]
SMALL_CAP = "4096"  # bytes; big.png is larger
ALLOW = "--allow-images-outside-root"
PASSWD = "../" * 40 + "etc/passwd"  # climbs to / from any depth


class Hung(Exception):
    """Not an OSError, so no `except OSError` in the code under test can swallow it."""


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    def hung(signum, frame):
        raise Hung("blocked for 30 s: was a FIFO opened?")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tree(tmp_path):
    return build_hostile_tree(tmp_path / "data", big_bytes=int(SMALL_CAP) + 1)


def _row(image: str, question: str = "What is shown?", answer: str = "a gradient") -> dict[str, str]:
    return {"question": question, "image": image, "answer": answer}


def _run(capsys, tree, input_path: Path, out: Path, *flags: str) -> tuple[int, str]:
    """Run data_prep.jsonl as the command line does; return (exit code, what it printed)."""
    argv = ["--input", str(input_path), "--image-root", str(tree.root), "--output-dir", str(out), *QUIET, *flags]
    code = run_main(jsonl.main, argv)
    printed = capsys.readouterr()
    return code, printed.err + printed.out


def _assert_only_the_report_is_left(out: Path, row: int, reason: str) -> None:
    """The run refused: the output folder holds the complete problem report and nothing else."""
    assert sorted(path.name for path in out.iterdir()) == [INVALID_REPORT]
    reported = [json.loads(line) for line in (out / INVALID_REPORT).read_text().splitlines()]
    assert [(problem["row"], problem["reason"]) for problem in reported] == [(row, reason)]


# (case, image path as written in the input, extra flags, reason, texts the message must hold: the file first)
IMAGE_CASES = [
    ("dev_zero_symlink", "zero.png", [], "image_outside_root", ["zero.png resolves to /dev/zero", ALLOW]),
    ("dev_zero_allowed", "zero.png", [ALLOW], "not_a_file", ["zero.png (-> /dev/zero) is a character device"]),
    ("fifo", "pipe.png", [], "not_a_file", ["pipe.png is a FIFO"]),
    ("folder", "folder.png", [], "not_a_file", ["folder.png is a folder"]),
    ("over_cap", "big.png", ["--max-image-bytes", SMALL_CAP], "image_too_large", ["big.png is", f"of {SMALL_CAP}"]),
    ("dotdot_outside", "../outside/x.png", [], "image_outside_root", ["../outside/x.png resolves to", ALLOW]),
    ("absolute", "/etc/hosts", [], "image_outside_root", ["/etc/hosts resolves to /etc/hosts", ALLOW]),
    ("passwd", PASSWD, [], "image_outside_root", ["etc/passwd resolves to /etc/passwd", ALLOW]),
    ("fifo_outside", "../outside/pipe.png", [], "image_outside_root", ["../outside/pipe.png resolves to", ALLOW]),
    ("symlink_loop", "loop.png", [], "missing_image", ["loop.png"]),
    ("nul_byte", "good\u0000.png", [], "missing_image", ["good\\x00.png", "embedded null byte"]),
]


@pytest.mark.parametrize(
    ("image", "flags", "reason", "texts"), [case[1:] for case in IMAGE_CASES], ids=[case[0] for case in IMAGE_CASES]
)
def test_hostile_image_is_refused_naming_row_file_and_what_to_do(tmp_path, capsys, tree, image, flags, reason, texts):
    rows = write_jsonl(tmp_path / "rows.jsonl", [_row("good.png"), _row(image)])
    code, message = _run(capsys, tree, rows, tmp_path / "out", *flags)
    assert code == 1, message
    assert f"rows.jsonl row 1, field 'image': {reason}: " in message  # the input file and the row
    assert f"  {reason}: {REASONS[reason]}" in message  # what to do
    for text in texts:  # the image file, and what is wrong with it
        assert text in message
    _assert_only_the_report_is_left(tmp_path / "out", 1, reason)


def test_paths_outside_the_root_are_refused_before_they_are_opened(tmp_path, capsys, tree, monkeypatch):
    opened: list[str] = []

    def spy(function):
        def wrapper(path, *args, **kwargs):
            opened.append(os.path.realpath(path) if isinstance(path, str | Path) else str(path))
            return function(path, *args, **kwargs)

        return wrapper

    for module, name in ((builtins, "open"), (io, "open"), (os, "open")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    rows = write_jsonl(tmp_path / "rows.jsonl", [_row("good.png"), _row(PASSWD), _row("../outside/pipe.png")])
    code, message = _run(capsys, tree, rows, tmp_path / "out")
    monkeypatch.undo()
    assert code == 1 and "row 1, field 'image': image_outside_root" in message
    assert "row 2, field 'image': image_outside_root" in message
    assert os.path.realpath(tree.root / "good.png") in opened  # the spy sees what the converter reads
    assert "/etc/passwd" not in opened and os.path.realpath(tree.outside / "pipe.png") not in opened


def test_allow_flag_lets_images_outside_the_root_through(tmp_path, capsys, tree):
    outside = str(tree.outside / "x.png")
    rows = write_jsonl(tmp_path / "rows.jsonl", [_row("good.png"), _row("../outside/x.png"), _row(outside)])
    code, message = _run(capsys, tree, rows, tmp_path / "refused")
    assert code == 1 and "2 invalid row(s) (image_outside_root 2)" in message
    code, message = _run(capsys, tree, rows, tmp_path / "out", ALLOW)
    assert code == 0, message
    written = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert [row["images"][0]["path"] for row in written] == ["good.png", "../outside/x.png", outside]
    assert written[1]["images"][0]["bytes"] == (tree.outside / "x.png").read_bytes()


class _RecordingFile:
    """A file whose `read` sizes are recorded in `sizes`."""

    def __init__(self, file, sizes: list[int]):
        self.file, self.sizes = file, sizes

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()

    def read(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        return self.file.read(size)


def test_read_stays_bounded_when_a_file_reports_a_wrong_size(monkeypatch):
    # /proc files are regular files that report size 0 and hold more: only the read's own bound stops them.
    maps = Path("/proc/self/maps")
    assert maps.stat().st_size == 0 and len(maps.read_bytes()) > 65
    sizes: list[int] = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *args, **kwargs: _RecordingFile(real_open(*args, **kwargs), sizes))
    refused = prepare_image(ImageSource("image", path=maps), ImageSettings(embed=True, max_bytes=64), 5, "r", 0)
    monkeypatch.undo()
    assert sizes == [65]  # one read of at most cap + 1 bytes, whatever the file holds
    assert isinstance(refused, Problem) and refused.reason == "image_too_large"
    assert refused.detail == f"/proc/self/maps (-> /proc/{os.getpid()}/maps) holds more than 64 bytes (its size said 0)"


def test_geo3k_path_entries_follow_the_same_rule(tmp_path, tree):
    image = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    table = pa.table(
        {
            "images": [[{"bytes": None, "path": "good.png"}], [{"bytes": None, "path": "/etc/hosts"}]],
            "problem": ["<image>Find x.", "<image>Find y."],
            "answer": ["3", "4"],
        },
        schema=pa.schema([("images", pa.list_(image)), ("problem", pa.string()), ("answer", pa.string())]),
    )
    (tmp_path / "geo").mkdir()
    pq.write_table(table, tmp_path / "geo" / "train.parquet")
    argv = ["--input", str(tmp_path / "geo"), "--image-root", str(tree.root), "--val-split", "none", *QUIET]
    with pytest.raises(DataPrepError, match=r"train row 1, field 'images\[0\]': image_outside_root: /etc/hosts"):
        geo3k.main([*argv, "--output-dir", str(tmp_path / "out")])
    summary = geo3k.main([*argv, "--output-dir", str(tmp_path / "out"), "--skip-invalid"])
    assert summary.rows_written == {"train": 1} and summary.problems_by_reason == {"image_outside_root": 1}


# --- text that is not UTF-8 ----------------------------------------------------------------------


def test_jsonl_line_that_is_not_utf8_is_a_problem_of_its_row(tmp_path, capsys, tree):
    bad_line = b'{"question": "caf\xff?", "image": "good.png", "answer": "a"}'
    rows = [_row("good.png"), None, _row("other.png")]
    path = write_jsonl(tmp_path / "rows.jsonl", rows, raw_lines={1: bad_line})
    code, message = _run(capsys, tree, path, tmp_path / "out")
    assert code == 1, message
    assert "rows.jsonl row 1, field '<line>': not_utf8: line 2, byte 18 is 0xff, not UTF-8" in message
    assert "iconv -f latin1 -t utf-8 rows.jsonl > fixed.jsonl" in message
    _assert_only_the_report_is_left(tmp_path / "out", 1, "not_utf8")
    # The lines after the bad one are still read: --skip-invalid writes them.
    code, message = _run(capsys, tree, path, tmp_path / "out", "--skip-invalid")
    assert code == 0 and "read 3 rows, wrote 2 (train 2), skipped 1" in message
    skipped = [json.loads(line) for line in (tmp_path / "out" / SKIPPED_REPORT).read_text().splitlines()]
    assert [(problem["row"], problem["reason"]) for problem in skipped] == [(1, "not_utf8")]


def test_escaped_lone_surrogate_is_a_problem_not_a_crash(tmp_path, capsys, tree):
    # Valid UTF-8 JSON, but "\udcff" decodes to text parquet cannot store (pyarrow raised mid-run).
    line = '{"question": "caf\\udcff?", "image": "good.png", "answer": "a"}'
    path = write_jsonl(tmp_path / "rows.jsonl", [_row("good.png"), None], raw_lines={1: line})
    code, message = _run(capsys, tree, path, tmp_path / "out")
    assert code == 1, message
    assert "rows.jsonl row 1, field 'question': not_utf8: character 4 is the lone surrogate \\udcff" in message
    _assert_only_the_report_is_left(tmp_path / "out", 1, "not_utf8")


def test_json_list_that_is_not_utf8_stops_before_any_output(tmp_path, tree):
    path = tmp_path / "rows.json"
    path.write_bytes(b'[\n {"question": "ok", "image": "good.png", "answer": "a"},\n {"question": "caf\xe9"}\n]\n')
    out = tmp_path / "out"
    argv = ["--input", str(path), "--image-root", str(tree.root), "--output-dir", str(out), *QUIET]
    with pytest.raises(DataPrepError) as refused:
        jsonl.main(argv)
    assert str(refused.value) == (
        f"{path} line 3, byte 19 is 0xe9, not UTF-8; nothing was written. Re-encode the file as UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8 rows.json > fixed.json if it is Latin-1) and rerun."
    )
    assert not out.exists()


# --- output folders ------------------------------------------------------------------------------


def test_failed_run_removes_only_the_folders_it_made(tmp_path, tree):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    argv = ["--input", str(empty), "--image-root", str(tree.root), *QUIET]
    made = tmp_path / "new" / "deeper"
    with pytest.raises(DataPrepError, match="no rows to write"):
        jsonl.main([*argv, "--output-dir", str(made), "--image-paths"])
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    (existing / "images").mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataPrepError, match="no rows to write"):
        jsonl.main([*argv, "--output-dir", str(existing), "--image-paths"])
    assert sorted(path.name for path in existing.iterdir()) == ["images", "notes.txt"]


# --- duplicates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["--embed-images", "--image-paths"])
def test_check_reports_duplicate_rows_as_a_warning(tmp_path, capsys, tree, storage):
    rows = [
        _row("good.png"),
        _row("other.png"),
        _row("good.png"),  # duplicate of row 0
        _row("good.png", answer="something else"),  # same prompt and image, other answer: not a duplicate
        _row("other.png"),  # duplicate of row 1
        _row("good.png", question="Another question?"),  # other prompt: not a duplicate
        _row("good.png"),  # duplicate of row 0
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    code, message = _run(capsys, tree, path, tmp_path / "out", storage)
    assert code == 0, message
    assert "wrote 7" in message  # the converter drops nothing
    parquet = tmp_path / "out" / "train.parquet"
    report = check.check_parquet(parquet)
    assert report.duplicates == [(2, 0), (4, 1), (6, 0)] and report.ok
    assert check.main([str(parquet)]) == 0  # a warning, not a failure
    printed = capsys.readouterr().out
    assert "warning: 3 duplicate row(s)" in printed
    assert "row 2 repeats row 0, row 4 repeats row 1, row 6 repeats row 0" in printed
    assert "remove them from the input" in printed


# --- memory ---------------------------------------------------------------------------------------


PEAK_RSS_CAP = 1.5 * 2**30  # bytes; reading /dev/zero whole once grew to 2.7 GB

MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
print(done.returncode, peak)
print(done.stdout + done.stderr, file=sys.stderr)
"""


def test_peak_memory_of_the_hostile_corpus_is_bounded(tmp_path, tree):
    images = [
        "good.png",
        "zero.png",
        "pipe.png",
        "folder.png",
        "big.png",
        "loop.png",
        "../outside/x.png",
        "../outside/pipe.png",
        "/etc/hosts",
        PASSWD,
    ]
    rows = write_jsonl(tmp_path / "rows.jsonl", [_row(image) for image in images])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_prep.jsonl", "--input", str(rows), "--image-root", str(tree.root)]
    command += ["--output-dir", str(out), "--workers", "1", "--no-progress", "--skip-invalid", ALLOW]
    command += ["--max-image-bytes", SMALL_CAP]
    # A wrapper process, so RUSAGE_CHILDREN counts the converter and its worker only, not earlier tests.
    measured = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, timeout=150)
    assert measured.returncode == 0, measured.stderr
    code, peak = (int(value) for value in measured.stdout.split())
    assert code == 0, measured.stderr
    print(f"peak RSS of the hostile conversion: {peak / 2**20:.0f} MiB")
    assert peak < PEAK_RSS_CAP, f"peak RSS {peak / 2**20:.0f} MiB"
    skipped = [json.loads(line) for line in (out / SKIPPED_REPORT).read_text().splitlines()]
    assert [(problem["row"], problem["reason"]) for problem in skipped] == [
        (1, "not_a_file"),  # /dev/zero: a character device
        (2, "not_a_file"),  # FIFO
        (3, "not_a_file"),  # folder
        (4, "image_too_large"),
        (5, "missing_image"),  # symlink loop
        (7, "not_a_file"),  # FIFO outside the root
        (8, "undecodable_image"),  # /etc/hosts is not an image
        (9, "undecodable_image"),  # nor is /etc/passwd
    ]
