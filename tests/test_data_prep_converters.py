"""data_prep.geo3k, data_prep.jsonl, data_prep.synthetic and data_prep.check on generated fixtures."""

from __future__ import annotations

import io
import json
import runpy
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import build_geo3k_copy, build_mmrlhf_tree, gradient_rgb, image_bytes, write_jsonl
from PIL import Image

from data_prep import check, geo3k, jsonl, synthetic
from data_prep.pipeline import DataPrepError, InvalidRowsError
from verl_ext.task import COT_INSTRUCTION

QUIET = ["--workers", "0", "--no-progress"]


def _rows(path):
    return pq.read_table(path).to_pylist()


# --- geo3k -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_geo3k_train_and_test_splits_like_verls_example(tmp_path, layout):
    source = build_geo3k_copy(tmp_path, layout=layout)
    summary = geo3k.main(["--input", str(source), "--output-dir", str(tmp_path / "out"), *QUIET])
    assert summary.rows_written == {"train": 6, "val": 3}  # test split (3 rows) is the validation file
    train, val = _rows(tmp_path / "out" / "train.parquet"), _rows(tmp_path / "out" / "val.parquet")
    row = train[2]
    assert row["data_source"] == "hiyouga/geometry3k" and row["ability"] == "math"
    assert row["prompt"][0]["content"] == f"<image>Find x in triangle number 2.\n{COT_INSTRUCTION}"
    assert row["reward_model"]["ground_truth"] == "5" and row["extra_info"]["question"].startswith("<image>Find x")
    assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (34, 24)
    assert {r["extra_info"]["split"] for r in val} == {"val"}
    assert [r["extra_info"]["index"] for r in val] == [0, 1, 2]


def test_geo3k_validation_split_choice_and_val_size(tmp_path):
    source = build_geo3k_copy(tmp_path, layout="parquet")
    out = tmp_path / "out"
    summary = geo3k.main(["--input", str(source), "--output-dir", str(out), "--val-split", "validation", *QUIET])
    assert summary.rows_written == {"train": 6, "val": 2}
    summary = geo3k.main(["--input", str(source), "--output-dir", str(out), "--val-split", "none", "--val-size", "2"])
    assert summary.rows_written == {"train": 4, "val": 2}
    with pytest.raises(DataPrepError, match="--val-size needs --val-split none"):
        geo3k.main(["--input", str(source), "--output-dir", str(out), "--val-size", "2", *QUIET])
    with pytest.raises(DataPrepError, match="no split"):
        geo3k.main(["--input", str(source), "--output-dir", str(out), "--val-split", "dev", *QUIET])


def test_geo3k_no_cot_and_bad_placeholder(tmp_path):
    import datasets

    source = build_geo3k_copy(tmp_path, layout="save_to_disk", sizes={"train": 3, "test": 1})
    data = datasets.load_from_disk(str(source))
    broken = data["train"].map(lambda row, i: {"problem": row["problem"] * (2 if i == 1 else 1)}, with_indices=True)
    fixed = tmp_path / "broken"
    datasets.DatasetDict({"train": broken, "test": data["test"]}).save_to_disk(str(fixed))
    with pytest.raises(InvalidRowsError, match="train row 1, field 'problem': placeholder_count"):
        geo3k.main(["--input", str(fixed), "--output-dir", str(tmp_path / "o"), *QUIET])
    geo3k.main(["--input", str(source), "--output-dir", str(tmp_path / "o"), "--no-cot", *QUIET])
    assert _rows(tmp_path / "o" / "train.parquet")[0]["prompt"][0]["content"] == "<image>Find x in triangle number 0."


def test_geo3k_hub_file_names_give_split_names(tmp_path):
    source = build_geo3k_copy(tmp_path, layout="parquet", sizes={"train": 2, "test": 1})
    for file in (source / "data").iterdir():  # older hub exports add a hash suffix
        file.rename(file.with_name(file.name.replace(".parquet", "-a1b2c3.parquet")))
    summary = geo3k.main(["--input", str(source), "--output-dir", str(tmp_path / "out"), *QUIET])
    assert summary.rows_written == {"train": 2, "val": 1}


# --- jsonl ------------------------------------------------------------------------------------


def _jsonl_fixture(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
        (images / name).write_bytes(image_bytes(gradient_rgb(30, 20, seed=seed)))
    rows = [
        {"q": "Which is brighter?", "a": "left", "pics": ["a.png", "b.png"], "part": "train"},
        {"q": "<image> vs <image>: same?", "a": 0, "pics": ["a.png", "c.png"], "part": "validation"},
        {"q": "What is it?", "a": "a gradient", "pics": "c.png", "part": "TRAIN"},
        {"q": "Broken row", "a": "x", "pics": "c.png", "part": "holdout"},
        {"q": "Line replaced below", "a": "x", "pics": "a.png", "part": "train"},
    ]
    return write_jsonl(tmp_path / "mine.jsonl", rows, raw_lines={4: '{"q": "unterminated'}), images


def test_jsonl_custom_fields_multi_image_and_split_field(tmp_path):
    path, images = _jsonl_fixture(tmp_path)
    argv = ["--input", str(path), "--image-root", str(images), "--output-dir", str(tmp_path / "out"), *QUIET]
    fields = ["--question-field", "q", "--answer-field", "a", "--image-field", "pics", "--split-field", "part"]
    with pytest.raises(InvalidRowsError) as caught:
        jsonl.main([*argv, *fields])
    assert caught.value.counts == {"unknown_split": 1, "bad_json": 1}
    summary = jsonl.main([*argv, *fields, "--skip-invalid", "--data-source", "mine"])
    assert summary.rows_written == {"train": 2, "val": 1}
    train, val = _rows(tmp_path / "out" / "train.parquet"), _rows(tmp_path / "out" / "val.parquet")
    assert train[0]["prompt"][0]["content"].startswith("<image><image>Which is brighter?\nFirst output")
    assert [image["path"] for image in train[0]["images"]] == ["a.png", "b.png"]
    assert val[0]["prompt"][0]["content"].startswith("<image> vs <image>: same?")
    assert val[0]["reward_model"]["ground_truth"] == "0"  # numbers are accepted as text
    assert train[1]["extra_info"]["index"] == 2 and train[0]["data_source"] == "mine"
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["row"], s["reason"]) for s in skipped] == [(3, "unknown_split"), (4, "bad_json")]


def test_jsonl_json_list_with_default_fields_and_image_root(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=3)
    rows = [{"question": r["problem"], "answer": r["solution"], "image": r["image"]} for r in tree.rows]
    path = tmp_path / "MM-RLHF" / "rows.json"
    path.write_text(json.dumps(rows))  # image paths are relative to the file's folder by default
    summary = jsonl.main(["--input", str(path), "--output-dir", str(tmp_path / "out"), *QUIET])
    assert summary.rows_written == {"train": 3}
    assert _rows(tmp_path / "out" / "train.parquet")[0]["data_source"] == "rows"


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_is_deterministic_fast_and_split(tmp_path):
    started = time.perf_counter()
    paths = synthetic.write_synthetic_dataset(tmp_path / "a", num_train=1000, num_val=50, seed=3)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"1050 synthetic rows took {elapsed:.1f} s"
    synthetic.write_synthetic_dataset(tmp_path / "b", num_train=20, num_val=5, seed=3)
    synthetic.write_synthetic_dataset(tmp_path / "c", num_train=20, num_val=5, seed=4)
    a_train, b_train, c_train = (_rows(tmp_path / name / "train.parquet") for name in "abc")
    assert a_train[:20] == b_train  # train row i does not depend on the number of rows
    assert b_train != c_train
    assert set(paths) == {"train", "val"} and len(_rows(paths["val"])) == 50
    assert {row["extra_info"]["split"] for row in _rows(paths["val"])} == {"val"}


def test_synthetic_covers_every_task_kind_and_answer_type(tmp_path):
    paths = synthetic.write_synthetic_dataset(tmp_path, num_train=200, num_val=0, seed=0)
    assert set(paths) == {"train"}
    rows = _rows(paths["train"])
    assert {row["extra_info"]["answer_type"] for row in rows} == {"free_form", "yes_no", "multiple_choice"}
    questions = [row["extra_info"]["question"] for row in rows]
    assert any(q.startswith("How many") for q in questions) and any("colour" in q for q in questions)
    sizes = {Image.open(io.BytesIO(row["images"][0]["bytes"])).size for row in rows}
    assert {56, 84, 112} == {side for size in sizes for side in size}


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_answers_match_the_drawn_scene(seed):
    for row in range(40):
        rng = np.random.default_rng([seed, 0, row])
        scene = synthetic.TASKS[synthetic._pick(rng, list(synthetic.TASKS))](rng)
        cells = {(shape.column, shape.row) for shape in scene.shapes}
        assert len(cells) == len(scene.shapes)  # no two shapes share a cell
        image = synthetic.draw(scene, 84, 84, (255, 255, 255))
        for shape in scene.shapes:  # the centre of each cell shows the shape's colour
            centre = (int((shape.column + 0.5) * 28), int((shape.row + 0.5) * 28))
            assert image.getpixel(centre) == synthetic.COLOURS[shape.colour]
        kinds = [shape.kind for shape in scene.shapes]
        if scene.question.startswith(("How many", "Count")):
            kind = next(k for k in synthetic.SHAPES if f"{k}s" in scene.question)
            assert scene.answer == str(kinds.count(kind))
        elif "choices:" in scene.question:
            kind = next(k for k in synthetic.SHAPES if f"the {k}?" in scene.question)
            [target] = [shape for shape in scene.shapes if shape.kind == kind]
            assert f"{scene.answer}. {target.colour}" in scene.question
        elif "Yes or No" in scene.question:
            words = scene.question.split()  # Is the FIRST left|right of the SECOND? ...
            first, relation, second = words[2], words[3], words[6].rstrip("?")
            [a] = [shape for shape in scene.shapes if shape.kind == first]
            [b] = [shape for shape in scene.shapes if shape.kind == second]
            truth = a.column < b.column if relation == "left" else a.column > b.column
            assert scene.answer == ("Yes" if truth else "No")
        else:
            kind = next(k for k in synthetic.SHAPES if k in scene.question)
            [target] = [shape for shape in scene.shapes if shape.kind == kind]
            assert scene.answer == target.colour


def test_synthetic_prompt_lengths_vary_within_small_batches(tmp_path):
    # verl's maybe_fix_3d_position_ids breaks when all sequences of a batch are equally long;
    # text length x image token count should almost never coincide across 4 random rows.
    rows = _rows(synthetic.write_synthetic_dataset(tmp_path, num_train=400, num_val=0, seed=0)["train"])
    keys = [(len(row["prompt"][0]["content"]), Image.open(io.BytesIO(row["images"][0]["bytes"])).size) for row in rows]
    counts = np.array(list({key: keys.count(key) for key in keys}.values())) / len(keys)
    assert float(np.sum(counts**4)) < 1e-3  # chance that 4 random rows share one length profile


# --- check ------------------------------------------------------------------------------------


def test_check_accepts_converter_output_and_summarises(tmp_path, capsys):
    paths = synthetic.write_synthetic_dataset(tmp_path, num_train=30, num_val=5, seed=0)
    assert check.main([str(paths["train"]), str(paths["val"])]) == 0
    printed = capsys.readouterr().out
    assert "30 rows" in printed and "5 rows" in printed and "OK" in printed
    assert "answer types:" in printed and "multiple_choice" in printed and "image width  px: min 56" in printed


def test_check_counts_prompt_tokens_as_the_processor_does(tmp_path, tiny_qwen25vl_dir, capsys):
    import pyarrow as pa
    from qwen_vl_utils import process_vision_info
    from transformers import AutoProcessor

    paths = synthetic.write_synthetic_dataset(tmp_path, num_train=6, num_val=0, seed=0)
    rows = _rows(paths["train"])
    # sizes the processor resizes differently: tiny, wide, larger than its cap, and a recorded max_pixels
    cases = [((30, 30), None), ((300, 60), None), ((500, 400), None), ((400, 400), 112 * 112), ((56, 56), None)]
    cases.append(((90, 200), None))
    for row, (size, max_pixels) in zip(rows, cases, strict=True):
        row["images"][0]["bytes"] = image_bytes(gradient_rgb(*size))
        row["images"][0]["max_pixels"] = max_pixels
    varied = tmp_path / "varied.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(paths["train"])), varied)

    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_dir)
    expected = []
    for row in rows:
        text = row["prompt"][0]["content"].replace("<image>", "")
        entry = {"image": Image.open(io.BytesIO(row["images"][0]["bytes"]))}
        if row["images"][0]["max_pixels"]:
            entry["max_pixels"] = row["images"][0]["max_pixels"]
        messages = [{"role": "user", "content": [{"type": "image", **entry}, {"type": "text", "text": text}]}]
        images, _ = process_vision_info(messages)
        template = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected.append(len(processor(text=[template], images=images)["input_ids"][0]))

    limit = sorted(expected)[3]
    report = check.check_parquet(varied, processor=processor, max_prompt_length=limit)
    assert report.prompt_tokens == expected
    assert report.overlong_rows == [row for row, tokens in enumerate(expected) if tokens > limit] != []
    assert check.main([str(varied), "--tokens", str(tiny_qwen25vl_dir), "--max-prompt-length", str(limit)]) == 0
    printed = capsys.readouterr().out
    assert "prompt tokens (images included)" in printed and f"over max_prompt_length={limit}: 2 row(s)" in printed


def test_check_reports_each_broken_row(tmp_path, capsys):
    import pyarrow as pa

    paths = synthetic.write_synthetic_dataset(tmp_path, num_train=6, num_val=0, seed=0)
    rows = _rows(paths["train"])
    rows[1]["prompt"][0]["content"] = rows[1]["prompt"][0]["content"].replace("<image>", "")
    rows[2]["images"][0]["bytes"] = b"garbage"
    rows[3]["reward_model"]["ground_truth"] = " "
    rows[4]["extra_info"]["question"] = ""
    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(paths["train"])), broken)
    report = check.check_parquet(broken)
    assert report.error_counts == {
        "placeholder_count": 1,
        "undecodable_image": 1,
        "empty_answer": 1,
        "bad_extra_info": 1,
    }
    assert [row for row, _, _ in report.errors] == [1, 2, 3, 4]
    assert check.main([str(broken)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_check_flags_null_bytes_that_would_crash_verls_loader(tmp_path):
    import pyarrow as pa

    schema = pa.schema([(name, pa.string()) for name in ("data_source", "ability")])
    schema = schema.append(pa.field("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))))
    schema = schema.append(pa.field("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))))
    schema = schema.append(pa.field("reward_model", pa.struct([("ground_truth", pa.string())])))
    schema = schema.append(pa.field("extra_info", pa.struct([("question", pa.string()), ("answer", pa.string())])))
    row = {
        "data_source": "x",
        "ability": "y",
        "prompt": [{"role": "user", "content": "<image>q"}],
        "images": [{"bytes": None, "path": "/some/file.png"}],
        "reward_model": {"ground_truth": "a"},
        "extra_info": {"question": "q", "answer": "a"},
    }
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    assert check.check_parquet(path).error_counts == {"bad_image_entry": 1}


# --- command lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mmrlhf", "geo3k", "jsonl", "synthetic", "check"])
def test_every_module_documents_itself(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"data_prep.{name}", "--help"])
    monkeypatch.delitem(sys.modules, f"data_prep.{name}", raising=False)  # run it fresh, as `python -m` does
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(f"data_prep.{name}", run_name="__main__")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"python -m data_prep.{name}" in text
    if name != "check":
        for option in ("--output-dir", "--seed", "--embed-images", "--image-paths", "--max-pixels", "--limit"):
            assert option in text


def test_module_entry_point_in_a_subprocess_with_worker_processes(tmp_path):
    tree = build_mmrlhf_tree(tmp_path, num_rows=6, bad={4: "missing_image"})
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--output-dir", str(tmp_path / "o")]
    command = [sys.executable, "-m", "data_prep.mmrlhf", *argv, "--workers", "2", "--val-size", "0.5"]
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "row 4" in failed.stderr and "missing_image 1" in failed.stderr
    done = subprocess.run([*command, "--skip-invalid"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "read 6 rows, wrote 5" in done.stdout and "missing_image 1" in done.stdout
    assert "data_prep.mmrlhf: 100%" in done.stderr  # the progress bar


def test_ctrl_c_during_a_parallel_run_leaves_no_output(tmp_path):
    import signal

    tree = build_mmrlhf_tree(tmp_path, num_rows=11)
    rows = json.loads(tree.json_path.read_text()) * 400  # 4400 rows over the same 11 files
    tree.json_path.write_text(json.dumps(rows))
    out = tmp_path / "out"
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--output-dir", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "data_prep.mmrlhf", *argv, "--workers", "2", "--row-group-size", "8", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited "ignore"; give the
        # child the default disposition so that it gets the KeyboardInterrupt a user's Ctrl-C gives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = out / ".train.parquet.partial"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 4096) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists()  # the run made the folder; it removed its partial files, then the empty folder
