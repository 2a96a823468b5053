"""The toy reproduction's bookkeeping (recipe/noisygrpo/toy/reproduce.py): overrides, summaries, table."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe.noisygrpo.toy import reproduce
from recipe.noisygrpo.toy.reproduce import ReproductionSettings


def _accuracies(noisygrpo_clean: list[float]) -> dict[str, list[dict[str, float]]]:
    def result(clean: float) -> dict[str, float]:
        return {"clean": clean, "noisy": 0.4, "shifted": 0.3, "blind": 0.2}

    return {
        "base": [result(0.70)],
        "grpo": [result(0.70 + 0.01 * i) for i in range(len(noisygrpo_clean))],
        "noisygrpo": [result(value) for value in noisygrpo_clean],
    }


def _overrides(method: str) -> dict[str, str]:
    data = {"train": Path("t.parquet"), **{split: Path(f"{split}.parquet") for split in reproduce.SPLITS}}
    listed = reproduce.rl_overrides(method, Path("m"), data, Path("run"), 3, ReproductionSettings())
    assert len(listed) == len({item.split("=", 1)[0] for item in listed}), "a key set twice"
    return dict(item.split("=", 1) for item in listed)


def _differing(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)} - {"trainer.experiment_name"}


def test_grpo_and_noisygrpo_runs_differ_only_by_estimator_and_noise():
    grpo, noisy = _overrides("grpo"), _overrides("noisygrpo")
    assert _differing(grpo, noisy) == {"algorithm.adv_estimator", "noisygrpo.noise.levels"}
    assert grpo["algorithm.adv_estimator"] == "grpo" and grpo["noisygrpo.noise.levels"] == "[0.0,0.0,0.0,0.0]"
    assert noisy["data.val_files"] == "[clean.parquet,noisy.parquet,shifted.parquet,blind.parquet]"
    assert noisy["noisygrpo.reward.correctness"] == "exact"


def test_ablation_is_noisygrpo_with_grpo_advantage_and_grpo_with_noisy_rollouts():
    ablation = _overrides("grpo_noisy")
    assert _differing(ablation, _overrides("noisygrpo")) == {"algorithm.adv_estimator"}
    assert _differing(ablation, _overrides("grpo")) == {"noisygrpo.noise.levels"}
    assert ablation["algorithm.adv_estimator"] == "grpo"
    assert "noisygrpo.noise.levels" not in ablation  # the recipe's levels 0 / 0.3 / 0.6 / 0.9


def test_ablation_rows_and_pairs_appear_only_when_it_ran():
    accuracies = _accuracies([0.80, 0.84, 0.82])
    without = {t["comparison"] for t in reproduce.comparisons(accuracies)}
    assert without == {"grpo - base", "noisygrpo - base", "noisygrpo - grpo"}
    accuracies["grpo_noisy"] = [{"clean": c, "noisy": 0.5, "shifted": 0.3, "blind": 0.2} for c in (0.75, 0.76, 0.80)]
    tests = {(t["split"], t["comparison"]): t for t in reproduce.comparisons(accuracies)}
    # paired by seed: 0.80-0.75, 0.84-0.76, 0.82-0.80
    assert tests["clean", "noisygrpo - grpo_noisy"]["difference"] == pytest.approx(0.05)
    assert tests["noisy", "grpo_noisy - grpo"]["difference"] == pytest.approx(0.1)
    assert tests["clean", "grpo_noisy - base"]["difference"] == pytest.approx(0.07)
    text = reproduce.results_markdown(
        reproduce.summarise(accuracies), list(tests.values()), ReproductionSettings(seeds=3)
    )
    means_table = text.split("Standard deviation")[0]
    lines = {line.split("|")[1].strip(): line for line in means_table.splitlines() if line.startswith("| ")}
    assert "| 77.0 |" in lines["GRPO, noisy rollouts"]
    assert "+5.0" in lines["NoisyGRPO − GRPO, noisy rollouts"]
    assert "+10.0" in lines["GRPO, noisy rollouts − GRPO"]


def test_summary_has_std_only_over_several_seeds():
    rows = reproduce.summarise(_accuracies([0.80, 0.84, 0.82]))
    by_key = {(row["method"], row["split"]): row for row in rows}
    assert by_key["noisygrpo", "clean"]["mean"] == pytest.approx(0.82)
    assert by_key["noisygrpo", "clean"]["std"] == pytest.approx(0.02)
    assert by_key["noisygrpo", "clean"]["seeds"] == 3
    assert by_key["base", "clean"]["std"] is None and by_key["base", "clean"]["seeds"] == 1


def test_comparisons_are_paired_by_seed_and_flag_two_standard_errors():
    tests = {(t["split"], t["comparison"]): t for t in reproduce.comparisons(_accuracies([0.80, 0.84, 0.82]))}
    against_base = tests["clean", "noisygrpo - base"]
    assert against_base["difference"] == pytest.approx(0.12)
    assert against_base["se"] == pytest.approx(0.02 / 3**0.5)
    assert against_base["beyond_2se"] is True
    # paired: differences 0.10, 0.13, 0.10 against GRPO's 0.70, 0.71, 0.72
    against_grpo = tests["clean", "noisygrpo - grpo"]
    assert against_grpo["difference"] == pytest.approx(0.11)
    # identical accuracies: no difference, zero spread -> not beyond 2 se
    assert tests["noisy", "grpo - base"]["difference"] == pytest.approx(0.0)
    assert tests["noisy", "grpo - base"]["beyond_2se"] is False
    one_seed = reproduce.comparisons(_accuracies([0.9]))
    assert all(t["se"] is None and t["beyond_2se"] is None for t in one_seed)


def test_results_markdown_shows_means_deltas_and_dashes_for_one_seed():
    accuracies = _accuracies([0.80, 0.84, 0.82])
    text = reproduce.results_markdown(
        reproduce.summarise(accuracies), reproduce.comparisons(accuracies), ReproductionSettings(seeds=3)
    )
    means_table, std_table = text.split("Standard deviation")
    lines = {line.split("|")[1].strip(): line for line in means_table.splitlines() if line.startswith("| ")}
    assert "| 82.0 |" in lines["NoisyGRPO"]
    assert "+12.0" in lines["NoisyGRPO − base"]
    assert "| clean | noisygrpo - base | +12.0 | 1.2 | yes |" in text
    base_std = next(line for line in std_table.splitlines() if line.startswith("| base"))
    assert "—" in base_std and "2.0" in next(line for line in std_table.splitlines() if line.startswith("| NoisyGRPO"))


def test_out_folder_refuses_runs_made_with_other_settings(tmp_path):
    reproduce.check_out_folder(tmp_path, ReproductionSettings(seeds=1, steps=40))
    reproduce.check_out_folder(tmp_path, ReproductionSettings(seeds=3, steps=40))  # more seeds: fine
    with pytest.raises(SystemExit, match="steps 40 -> 20"):
        reproduce.check_out_folder(tmp_path, ReproductionSettings(seeds=3, steps=20))


def test_command_line_rejects_unknown_methods(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--methods", "ppo"])
    assert "choose from grpo, noisygrpo, grpo_noisy" in capsys.readouterr().err


def test_heldout_curves_read_verl_validation_per_split_and_step(tmp_path):
    import json

    path = tmp_path / "metrics.jsonl"
    records = [
        {"step": 0, "data": {"val-aux/toy_clean/correctness/mean@1": 0.5, "val-aux/toy_blind/correctness/mean@1": 0.2}},
        {"step": 1, "data": {"critic/score/mean": 1.0}},  # a training step without validation
        {"step": 10, "data": {"val-aux/toy_clean/correctness/mean@1": 0.75, "val-aux/toy_clean/reward/mean@1": 9.0}},
    ]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert reproduce.heldout_curves(path) == {0: {"clean": 0.5, "blind": 0.2}, 10: {"clean": 0.75}}
