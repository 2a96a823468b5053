"""The toy reproduction's task and warm start (recipe/noisygrpo/toy)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import check
from recipe.noisygrpo.toy import scenes, warm_start
from recipe.noisygrpo.toy.warm_start import WarmStartSettings


def test_scenes_are_a_function_of_seed_split_and_row():
    first, again, other = scenes.scene(3, "train", 5), scenes.scene(3, "train", 5), scenes.scene(4, "train", 5)
    assert first.image.tobytes() == again.image.tobytes() and first.question == again.question
    assert (other.image.tobytes(), other.question) != (first.image.tobytes(), first.question)
    kinds = {scenes.scene(0, "train", row).kind for row in range(40)}
    assert kinds == {"colour", "count"}


def test_count_scenes_caption_what_is_drawn_and_answer_the_count():
    for row in range(60):
        s = scenes.scene(1, "sft", row)
        if s.kind != "count":
            continue
        asked = s.question.split()[2].rstrip(".").removesuffix("s")
        assert s.answer == str(sum(item.endswith(asked) for item in s.caption.split(", ")))
        assert s.image.size[0] in scenes.SIZES and s.image.size[1] in scenes.SIZES


def test_held_out_splits_change_what_they_should():
    clean, noisy, blind = (scenes.split_scenes(2, split, 12) for split in ("clean", "noisy", "blind"))
    shifted = scenes.split_scenes(2, "shifted", 12)
    assert [s.question for s in noisy] == [s.question for s in clean] == [s.question for s in blind]
    assert all(n.image.tobytes() != c.image.tobytes() for n, c in zip(noisy, clean, strict=True))
    clean_images = [c.image.tobytes() for c in clean]
    # every blind row shows another row's clean image
    assert all(
        b.image.tobytes() in clean_images and b.image.tobytes() != c for b, c in zip(blind, clean_images, strict=True)
    )
    assert all(s.image.size[0] in scenes.SHIFTED_SIZES for s in shifted)
    assert all(np.asarray(s.image)[0, 0].tolist() in [list(b) for b in scenes.SHIFTED_BACKGROUNDS] for s in shifted)


def test_split_files_are_valid_verl_rows(tmp_path):
    path = scenes.write_split(tmp_path, 0, "clean", 8)
    report = check.check_parquet(path)
    assert report.ok, report.format()
    rows = pq.read_table(path).to_pylist()
    assert {row["data_source"] for row in rows} == {"toy_clean"}
    assert rows[0]["prompt"][0]["content"].startswith("<image>")


def test_warm_start_is_cached_by_its_settings(tmp_path, monkeypatch):
    settings = WarmStartSettings(steps=2, batch_size=4, sft_rows=16, eval_rows=4)
    folder = warm_start.warm_start(tmp_path, settings)
    report = json.loads((folder / "warm_start.json").read_text())
    assert set(report["accuracy"]) == {"clean", "blind", "noise_0.3", "noise_0.6", "noise_0.9"}
    assert all(0.0 <= value <= 1.0 for value in report["accuracy"].values())
    assert (folder / "config.json").exists() and report["settings"]["steps"] == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a cached warm start must not train again")

    monkeypatch.setattr(warm_start, "train", no_training)
    assert warm_start.warm_start(tmp_path, settings) == folder
    assert WarmStartSettings(steps=3).key() != WarmStartSettings(steps=2).key()


@pytest.mark.parametrize("value", [warm_start.chance_accuracy()])
def test_chance_is_a_blind_model_that_knows_the_question_kinds(value):
    assert value == pytest.approx(0.5 / 6 + 0.5 / 4)
