"""The shared pipeline through data_prep.mmrlhf: layout, bad input, splits, streaming, atomic output."""

from __future__ import annotations

import io
import json
import os

import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import BAD_CASES, build_mmrlhf_tree, gradient_rgb, image_bytes
from PIL import Image

from data_prep import mmrlhf
from data_prep.pipeline import (
    INVALID_REPORT,
    SKIPPED_REPORT,
    ConversionOptions,
    InvalidRowsError,
    convert,
    partial_path,
)
from data_prep.records import ImageSource, RowTemplate, SourceRecord
from verl_ext.task import COT_INSTRUCTION


def _run(tree, out, *extra: str):
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--output-dir", str(out)]
    return mmrlhf.main([*argv, "--workers", "0", "--no-progress", *extra])


def _rows(path):
    return pq.read_table(path).to_pylist()


def test_mmrlhf_rows_have_the_geo3k_layout(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=12)
    summary = _run(tree, tmp_path / "out")
    rows = _rows(tmp_path / "out" / "train.parquet")
    assert summary.rows_read == summary.rows_written["train"] == len(rows) == 12
    assert set(rows[0]) == {"data_source", "prompt", "images", "ability", "reward_model", "extra_info"}
    for index, (row, source) in enumerate(zip(rows, tree.rows, strict=True)):
        assert row["data_source"] == "mm_rlhf"
        [message] = row["prompt"]
        assert message["role"] == "user"
        assert message["content"] == f"<image>{source['problem']}\n{COT_INSTRUCTION}"
        [image] = row["images"]
        assert image["path"] == source["image"]
        assert image["max_pixels"] == 2359296
        assert Image.open(io.BytesIO(image["bytes"])).mode == "RGB"
        info = row["extra_info"]
        assert info["question"] == source["problem"]  # raw question, no instruction
        assert info["index"] == index and info["split"] == "train"
        expected_answer = source["solution"].replace("<answer>", "").replace("</answer>", "").strip()
        assert info["answer"] == expected_answer
        # the ground truth is the solution exactly as written: the reference's reward compares with it
        assert row["reward_model"]["ground_truth"] == source["solution"]
        assert row["reward_model"]["style"] == "rule"
    assert {row["extra_info"]["answer_type"] for row in rows} == {"free_form", "multiple_choice", "yes_no"}


def test_no_cot_and_max_pixels_options(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=2)
    _run(tree, tmp_path / "out", "--no-cot", "--max-pixels", "0", "--min-pixels", "3136")
    row = _rows(tmp_path / "out" / "train.parquet")[0]
    assert row["prompt"][0]["content"] == f"<image>{tree.rows[0]['problem']}"
    assert "max_pixels" not in row["images"][0] and row["images"][0]["min_pixels"] == 3136


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_row_stops_the_run_naming_row_and_reason(tmp_path, case):
    tree = build_mmrlhf_tree(tmp_path, num_rows=8, bad={5: case})
    out = tmp_path / "out"
    with pytest.raises(InvalidRowsError) as caught:
        _run(tree, out)
    message = str(caught.value)
    assert "row 5, field" in message and case in message
    assert caught.value.counts == {case: 1}
    assert "--skip-invalid" in message
    assert not (out / "train.parquet").exists()
    assert not any(path.name.endswith(".partial") for path in out.iterdir())
    reported = [json.loads(line) for line in (out / INVALID_REPORT).read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in reported] == [(5, case)]


@pytest.mark.parametrize("case", BAD_CASES)
def test_skip_invalid_writes_good_rows_and_a_report(tmp_path, case, capsys):
    tree = build_mmrlhf_tree(tmp_path, num_rows=8, bad={2: case})
    out = tmp_path / "out"
    summary = _run(tree, out, "--skip-invalid")
    rows = _rows(out / "train.parquet")
    assert [row["extra_info"]["index"] for row in rows] == [0, 1, 3, 4, 5, 6, 7]
    reported = [json.loads(line) for line in (out / SKIPPED_REPORT).read_text().splitlines()]
    assert len(reported) == 1
    assert reported[0]["row"] == 2 and reported[0]["reason"] == case
    expected_field = "image" if case.endswith("_image") else ("problem" if case != "empty_answer" else "solution")
    assert reported[0]["field"] == expected_field
    assert summary.rows_skipped == 1 and summary.problems_by_reason == {case: 1}
    text = summary.format()
    assert f"skipped by reason: {case} 1" in text and str(out / "train.parquet") in text


def test_error_lists_every_kind_with_counts(tmp_path):
    bad = {1: "missing_image", 3: "missing_image", 4: "empty_answer", 6: "undecodable_image"}
    tree = build_mmrlhf_tree(tmp_path, num_rows=8, bad=bad)
    with pytest.raises(InvalidRowsError) as caught:
        _run(tree, tmp_path / "out")
    assert caught.value.counts == {"missing_image": 2, "empty_answer": 1, "undecodable_image": 1}
    assert [problem.row for problem in caught.value.first] == [1, 3, 4, 6]
    assert "missing_image 2" in str(caught.value)


def test_missing_keys_and_wrong_types_are_reported_not_dropped(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=4)
    rows = json.loads(tree.json_path.read_text())
    del rows[1]["solution"]
    rows[2]["image"] = 17
    rows[3] = "not an object"
    tree.json_path.write_text(json.dumps(rows))
    summary = _run(tree, tmp_path / "out", "--skip-invalid")
    assert summary.rows_written["train"] == 1
    reported = [json.loads(line) for line in (tmp_path / "out" / SKIPPED_REPORT).read_text().splitlines()]
    assert [(r["row"], r["field"], r["reason"]) for r in reported] == [
        (1, "solution", "missing_field"),
        (2, "image", "missing_field"),
        (3, "<row>", "missing_field"),
    ]


def test_cli_exit_code_and_message(tmp_path, capsys):
    from data_prep.pipeline import run_main

    tree = build_mmrlhf_tree(tmp_path, num_rows=3, bad={0: "missing_image"})
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--output-dir", str(tmp_path / "o")]
    assert run_main(mmrlhf.main, [*argv, "--workers", "0", "--no-progress"]) == 1
    assert "row 0" in capsys.readouterr().err
    assert run_main(mmrlhf.main, [*argv, "--workers", "0", "--no-progress", "--skip-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "read 3 rows, wrote 2 (train 2), skipped 1" in printed and "skipped.jsonl" in printed


def _split_of_rows(out):
    return {
        split: sorted(row["extra_info"]["index"] for row in _rows(out / f"{split}.parquet"))
        for split in ("train", "val")
    }


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=40)
    first = _run(tree, tmp_path / "a", "--val-size", "0.25", "--seed", "7")
    _run(tree, tmp_path / "b", "--val-size", "10", "--seed", "7")
    _run(tree, tmp_path / "c", "--val-size", "0.25", "--seed", "8")
    split_a, split_b, split_c = (_split_of_rows(tmp_path / name) for name in "abc")
    assert first.rows_written == {"train": 30, "val": 10}
    assert split_a == split_b  # 0.25 of 40 rows == 10 rows, same seed -> same rows
    assert split_a != split_c
    assert sorted(split_a["train"] + split_a["val"]) == list(range(40))
    val_rows = _rows(tmp_path / "a" / "val.parquet")
    assert {row["extra_info"]["split"] for row in val_rows} == {"val"}


def test_split_does_not_depend_on_invalid_rows_or_workers(tmp_path):
    clean = build_mmrlhf_tree(tmp_path / "clean", num_rows=20)
    broken = build_mmrlhf_tree(tmp_path / "broken", num_rows=20, bad={3: "missing_image"})
    _run(clean, tmp_path / "a", "--val-size", "5")
    _run(broken, tmp_path / "b", "--val-size", "5", "--skip-invalid")
    split_a, split_b = _split_of_rows(tmp_path / "a"), _split_of_rows(tmp_path / "b")
    for split in ("train", "val"):
        assert [index for index in split_a[split] if index != 3] == split_b[split]


def test_parallel_workers_give_identical_rows(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=12)
    _run(tree, tmp_path / "serial")
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--no-progress"]
    mmrlhf.main([*argv, "--output-dir", str(tmp_path / "parallel"), "--workers", "2"])
    assert _rows(tmp_path / "serial" / "train.parquet") == _rows(tmp_path / "parallel" / "train.parquet")


def test_rows_are_streamed_in_row_groups_and_limit_applies(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=11)
    _run(tree, tmp_path / "out", "--row-group-size", "4", "--limit", "10")
    metadata = pq.ParquetFile(tmp_path / "out" / "train.parquet").metadata
    assert metadata.num_rows == 10
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]


def test_image_paths_mode_stores_loadable_absolute_paths(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=11)
    _run(tree, tmp_path / "out", "--image-paths")
    rows = _rows(tmp_path / "out" / "train.parquet")
    for row, source in zip(rows, tree.rows, strict=True):
        [entry] = row["images"]
        assert set(entry) == {"image", "max_pixels"}
        assert os.path.isabs(entry["image"])
        assert Image.open(entry["image"]).mode == "RGB"
        original = tree.image_root / source["image"]
        # Upright RGB PNG/JPEG inputs are referenced in place; others get a normalised copy.
        referenced_in_place = entry["image"] == str(original.resolve())
        assert referenced_in_place == source["image"].endswith(("rgb.png", "rgb.jpg"))


def _records(count):
    data = image_bytes(gradient_rgb(28, 28))
    for row in range(count):
        yield SourceRecord(row, "mem", f"question {row}", "answer", (ImageSource("image", data=data),))


def test_interrupted_run_leaves_no_train_parquet(tmp_path):
    out = tmp_path / "out"
    seen_partial = []

    def interrupted(count):
        for record in _records(count):
            if record.row == 9:
                # Two row groups of 4 are already on disk, under the partial name only.
                seen_partial.append(partial_path(out / "train.parquet").stat().st_size)
                assert not (out / "train.parquet").exists()
                raise KeyboardInterrupt
            yield record

    options = ConversionOptions(output_dir=out, workers=0, progress=False, row_group_rows=4)
    with pytest.raises(KeyboardInterrupt):
        convert(interrupted(20), num_rows=20, template=RowTemplate("t", "a"), options=options)
    assert seen_partial and seen_partial[0] > 0
    assert not out.exists()  # neither train.parquet nor a leftover partial file, nor the folder the run made


def test_interrupted_rerun_keeps_the_previous_complete_file(tmp_path):
    out = tmp_path / "out"
    options = ConversionOptions(output_dir=out, workers=0, progress=False, row_group_rows=4)
    convert(_records(6), num_rows=6, template=RowTemplate("t", "a"), options=options)

    def failing():
        yield from _records(5)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        convert(failing(), num_rows=10, template=RowTemplate("t", "a"), options=options)
    assert pq.read_metadata(out / "train.parquet").num_rows == 6


def test_input_errors_are_clear(tmp_path):
    from data_prep.pipeline import DataPrepError

    tree = build_mmrlhf_tree(tmp_path, num_rows=2)
    with pytest.raises(DataPrepError, match="image root"):
        mmrlhf.main(["--input", str(tree.json_path), "--image-root", str(tmp_path / "nope"), "--output-dir", "x"])
    with pytest.raises(DataPrepError, match="leaving none for training"):
        _run(tree, tmp_path / "out", "--val-size", "2")
    all_bad = build_mmrlhf_tree(tmp_path / "bad", num_rows=1, bad={0: "empty_answer"})
    with pytest.raises(DataPrepError, match="no valid training rows"):
        _run(all_bad, tmp_path / "out_bad", "--skip-invalid")
    assert not (tmp_path / "out_bad" / "train.parquet").exists()


def test_rerun_without_validation_removes_the_stale_val_file(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=8)
    out = tmp_path / "out"
    _run(tree, out, "--val-size", "2", "--skip-invalid")
    assert (out / "val.parquet").exists() and (out / SKIPPED_REPORT).exists()
    summary = _run(tree, out)
    # The new train.parquet holds every row; the old val.parquet would overlap it.
    assert not (out / "val.parquet").exists() and not (out / SKIPPED_REPORT).exists()
    assert pq.read_metadata(out / "train.parquet").num_rows == 8
    assert f"removed {out / 'val.parquet'}" in summary.format()
