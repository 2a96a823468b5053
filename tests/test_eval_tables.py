"""Tables from lmms-eval 0.7.3 results JSONs of three runs (base, GRPO, NoisyGRPO).

The fixture files follow lmms-eval 0.7.3's real layout and format: ``<dir>/<sanitized model>/
<YYYYMMDD_HHMMSS>_results.json`` whose ``results`` maps task -> {"alias", "<metric>,none",
"<metric>_stderr,none" ("N/A" for custom aggregations), "samples"}, next to ``configs``,
``versions``, ``n-samples``, ``config``, ``date``... Expected cells are computed by hand below.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from recipe.noisygrpo.eval import tables
from recipe.noisygrpo.eval.tables import (
    AMBER,
    MMSTAR,
    Roles,
    RowKind,
    build_table,
    format_cell,
    load_paper_rows,
    load_run,
    render_latex,
)

MMSTAR_METRICS = (
    "coarse perception",
    "fine-grained perception",
    "instance reasoning",
    "logical reasoning",
    "science & technology",
    "math",
    "average",
)


def task_entry(alias: str, metrics: dict[str, object]) -> dict[str, object]:
    entry: dict[str, object] = {"alias": alias}
    for metric, value in metrics.items():
        entry[f"{metric},none"] = value
        entry[f"{metric}_stderr,none"] = "N/A"
        entry[f"{metric}_stderr_clt,none"] = 0.01
        entry[f"{metric}_stderr_clustered,none"] = "N/A"
    return entry


def results_document(results: dict[str, dict[str, object]], date: str, model: str) -> dict[str, object]:
    """A results JSON as lmms-eval 0.7.3's EvaluationTracker.save_results_aggregated writes it."""
    return {
        "results": results,
        "group_subtasks": {task: [] for task in results},
        "configs": {task: {"task": task, "output_type": "generate_until"} for task in results},
        "versions": {task: 0.0 for task in results},
        "n-shot": {task: 0 for task in results},
        "higher_is_better": {task: {} for task in results},
        "n-samples": {task: {"original": 1500, "effective": 1500} for task in results},
        "config": {"model": "qwen2_5_vl", "model_args": f"pretrained={model}", "batch_size": "1", "limit": None},
        "git_hash": None,
        "lmms_eval_version": "0.7.3",
        "date": date,
        "task_hashes": {},
        "model_source": "qwen2_5_vl",
        "model_name": model,
        "model_name_sanitized": model.strip("/").replace("/", "__"),
        "start_time": 100.0,
        "end_time": 200.0,
        "total_evaluation_time_seconds": "100.0",
    }


def write_results(run_dir: Path, date: str, results: dict[str, dict[str, object]], model: str = "/ckpt/hf") -> None:
    model_dir = run_dir / model.strip("/").replace("/", "__")
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / f"{date}_results.json").write_text(json.dumps(results_document(results, date, model), indent=2))


def mmstar(task: str, values: tuple[object, ...], drop: tuple[str, ...] = ()) -> dict[str, dict[str, object]]:
    metrics = {name: value for name, value in zip(MMSTAR_METRICS, values, strict=True) if name not in drop}
    return {task: task_entry(task, metrics)}


@pytest.fixture()
def three_runs(tmp_path: Path) -> dict[str, Path]:
    base, grpo, noisy = tmp_path / "base", tmp_path / "grpo", tmp_path / "noisygrpo"
    # base: a stock lmms-eval run (upstream task names), two result files; the later one wins for mmstar.
    write_results(base, "20250101_100000", mmstar("mmstar", (0.1,) * 7))
    write_results(
        base,
        "20250102_100000",
        {
            **mmstar("mmstar", (0.6123, 0.4507, 0.5876, 0.5012, 0.3988, 0.5544, 0.5192)),
            "amber_g": task_entry(
                "amber_g", {"amber_chair": 8.73, "amber_cover": 49.12, "amber_hal": 36.84, "amber_cog": 4.21}
            ),
            "mmerealworld_lite": task_entry("mmerealworld_lite", {"mme_realworld_score": 0.3921}),
            "mme_cot_reason": task_entry("mme_cot_reason", {"submission": None, "llm_as_judge_eval": 0.5123}),
        },
    )
    # grpo: our include-path task names; logical reasoning is not a number; no AMBER at all.
    write_results(
        grpo,
        "20250103_100000",
        {
            **mmstar("noisygrpo_mmstar", (0.6341, 0.4622, 0.6013, "N/A", 0.4076, 0.5618, 0.5296)),
            "noisygrpo_mmerealworld_lite": task_entry("noisygrpo_mmerealworld_lite", {"mme_realworld_score": 0.4087}),
            "noisygrpo_mme_cot_reason": task_entry(
                "noisygrpo_mme_cot_reason", {"submission": None, "llm_as_judge_eval": 0.5371}
            ),
        },
    )
    (grpo / "manifest.json").write_text(json.dumps({"judge": {"available": True}}))
    # noisygrpo: no `math` metric; evaluated without a judge key (manifest), so its judge score is void.
    write_results(
        noisy,
        "20250104_100000",
        {
            **mmstar("noisygrpo_mmstar", (0.6789, 0.4811, 0.6102, 0.5233, 0.4018, 0.0, 0.5419), drop=("math",)),
            "noisygrpo_amber_g": task_entry(
                "noisygrpo_amber_g", {"amber_chair": 7.11, "amber_cover": 51.06, "amber_hal": 31.92, "amber_cog": 3.38}
            ),
            "noisygrpo_mmerealworld_lite": task_entry("noisygrpo_mmerealworld_lite", {"mme_realworld_score": 0.4163}),
            "noisygrpo_mme_cot_reason": task_entry(
                "noisygrpo_mme_cot_reason", {"submission": None, "llm_as_judge_eval": 0.0}
            ),
        },
    )
    (noisy / "manifest.json").write_text(json.dumps({"judge": {"available": False}}))
    return {"base": base, "grpo": grpo, "noisygrpo": noisy}


def markdown_rows(path: Path) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and not line.startswith("| Model"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def run_cli(three_runs: dict[str, Path], out: Path) -> None:
    argv = [arg for name, path in three_runs.items() for arg in ("--run", f"{name}={path}")]
    assert tables.main([*argv, "--out", str(out)]) == 0


def test_mmstar_table_matches_hand_computed_values(three_runs: dict[str, Path], tmp_path: Path) -> None:
    run_cli(three_runs, tmp_path / "out")
    rows = markdown_rows(tmp_path / "out" / "mmstar.md")
    #                       CP      FP      IR      LR      ST      MA      AVG
    assert rows["base"] == ["61.2", "45.1", "58.8", "50.1", "39.9", "55.4", "51.9"]
    assert rows["grpo"] == ["63.4", "46.2", "60.1", "—", "40.8", "56.2", "53.0"]
    assert rows["noisygrpo"] == ["67.9", "48.1", "61.0", "52.3", "40.2", "—", "54.2"]
    # 67.89-61.23=6.66, 48.11-45.07=3.04, 61.02-58.76=2.26, 52.33-50.12=2.21, 40.18-39.88=0.30, 54.19-51.92=2.27
    assert rows["Δ noisygrpo - base"] == ["+6.7", "+3.0", "+2.3", "+2.2", "+0.3", "—", "+2.3"]
    # 63.41-61.23=2.18, 46.22-45.07=1.15, 60.13-58.76=1.37, LR n/a, 40.76-39.88=0.88, 56.18-55.44=0.74, 52.96-51.92=1.04
    assert rows["Δ grpo - base"] == ["+2.2", "+1.1", "+1.4", "—", "+0.9", "+0.7", "+1.0"]
    # 67.89-63.41=4.48, 48.11-46.22=1.89, 61.02-60.13=0.89, LR n/a, 40.18-40.76=-0.58, MA n/a, 54.19-52.96=1.23
    assert rows["Δ noisygrpo - grpo"] == ["+4.5", "+1.9", "+0.9", "—", "-0.6", "—", "+1.2"]
    assert rows["paper: NoisyGRPO"] == ["72.8", "—", "—", "—", "—", "—", "—"]
    assert "Δ grpo - grpo" not in rows and "Δ base - base" not in rows


def test_other_tables_and_missing_entries(three_runs: dict[str, Path], tmp_path: Path) -> None:
    run_cli(three_runs, tmp_path / "out")
    amber = markdown_rows(tmp_path / "out" / "amber.md")
    assert amber["base"] == ["8.7", "49.1", "36.8", "4.2"]  # AMBER is already in %
    assert amber["grpo"] == ["—"] * 4  # no amber_g task in that run
    # 7.11-8.73=-1.62, 51.06-49.12=1.94, 31.92-36.84=-4.92, 3.38-4.21=-0.83
    assert amber["Δ noisygrpo - base"] == ["-1.6", "+1.9", "-4.9", "-0.8"]
    assert amber["Δ noisygrpo - grpo"] == ["—"] * 4
    assert amber["paper: NoisyGRPO"] == ["—", "67.7", "—", "—"]
    amber_text = (tmp_path / "out" / "amber.md").read_text(encoding="utf-8")
    assert "| Model | CHAIR ↓ | Cover | Hal ↓ | Cog ↓ |" in amber_text
    assert amber_text.count("grpo: no `amber_g` results.") == 1  # one note per run and reason

    realworld = markdown_rows(tmp_path / "out" / "mme_realworld_lite.md")
    assert [realworld[name] for name in ("base", "grpo", "noisygrpo")] == [["39.2"], ["40.9"], ["41.6"]]
    assert realworld["Δ noisygrpo - base"] == ["+2.4"]  # 41.63-39.21

    cot_text = (tmp_path / "out" / "mme_cot.md").read_text(encoding="utf-8")
    cot = markdown_rows(tmp_path / "out" / "mme_cot.md")
    # Precision / Recall / F1 have no lmms-eval source; the judge score of the keyless run is dropped.
    assert cot["base"] == ["—", "—", "—", "51.2"]  # no manifest: judge status unknown, value kept
    assert cot["grpo"] == ["—", "—", "—", "53.7"]
    assert cot["noisygrpo"] == ["—", "—", "—", "—"]
    assert cot["paper: NoisyGRPO"] == ["—", "—", "47.7", "—"]
    assert "noisygrpo: evaluated without an LLM judge key" in cot_text

    mmstar_text = (tmp_path / "out" / "mmstar.md").read_text(encoding="utf-8")
    assert "—: not available." in mmstar_text
    assert "noisygrpo: metric `math` missing" in mmstar_text
    assert "grpo: metric `logical reasoning` missing or not a number" in mmstar_text


def test_csv_and_latex_outputs(three_runs: dict[str, Path], tmp_path: Path) -> None:
    run_cli(three_runs, tmp_path / "out")
    with open(tmp_path / "out" / "mmstar.csv", newline="", encoding="utf-8") as handle:
        records = {row["row"]: row for row in csv.DictReader(handle)}
    assert records["base"]["kind"] == "run"
    assert float(records["base"]["CP"]) == pytest.approx(61.23, abs=1e-9)
    assert records["noisygrpo"]["MA"] == ""
    assert records["Δ noisygrpo - grpo"]["kind"] == "delta_vs_grpo"
    assert float(records["Δ noisygrpo - grpo"]["ST"]) == pytest.approx(-0.58, abs=1e-9)
    assert records["paper: NoisyGRPO"]["kind"] == "paper" and records["paper: NoisyGRPO"]["FP"] == ""

    latex = (tmp_path / "out" / "mmstar.tex").read_text(encoding="utf-8")
    assert "\\begin{tabular}{lrrrrrrr}" in latex
    assert "$\\Delta$ noisygrpo - base & +6.7 & +3.0 & +2.3 & +2.2 & +0.3 & --- & +2.3 \\\\" in latex
    assert "paper: NoisyGRPO & 72.8 & --- &" in latex
    combined = (tmp_path / "out" / "tables.md").read_text(encoding="utf-8")
    assert combined.count("### ") == 4


def test_groups_keep_deltas_within_a_model_size(three_runs: dict[str, Path]) -> None:
    runs = [
        load_run("3B/base", three_runs["base"]),
        load_run("3B/noisygrpo", three_runs["noisygrpo"]),
        load_run("7B/base", three_runs["grpo"]),
    ]
    table = build_table(MMSTAR, runs, [], Roles())
    labels = [(row.label, row.kind) for row in table.rows]
    assert labels == [
        ("3B/base", RowKind.RUN),
        ("3B/noisygrpo", RowKind.RUN),
        ("Δ 3B/noisygrpo - 3B/base", RowKind.DELTA_VS_BASE),
        ("7B/base", RowKind.RUN),
    ]


def test_table_survives_runs_without_any_known_task(tmp_path: Path) -> None:
    write_results(
        tmp_path / "other", "20250101_000000", {"textvqa_val": task_entry("textvqa_val", {"exact_match": 0.7})}
    )
    table = build_table(AMBER, [load_run("base", tmp_path / "other")], [], Roles())
    assert table.rows[0].values == (None, None, None, None)
    assert "—" in render_latex(table, 1).replace("---", "—")


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert tables.main(["--run", f"base={tmp_path / 'empty'}", "--out", str(tmp_path / "o")]) == 2
    assert "no *_results.json under" in capsys.readouterr().err

    broken = tmp_path / "broken" / "model"
    broken.mkdir(parents=True)
    (broken / "20250101_000000_results.json").write_text("{not json")
    assert tables.main(["--run", f"base={tmp_path / 'broken'}", "--out", str(tmp_path / "o")]) == 2
    assert "20250101_000000_results.json: not a readable JSON file" in capsys.readouterr().err

    values = tmp_path / "paper.json"
    values.write_text(json.dumps({"rows": [{"label": "p", "values": {"mmstar/XX": 1.0}}]}))
    with pytest.raises(ValueError, match=r"unknown column key\(s\) \['mmstar/XX'\]"):
        load_paper_rows(values)


def test_packaged_paper_values_hold_the_known_numbers() -> None:
    (row,) = load_paper_rows()
    known = {key: value for key, value in row.values.items() if value is not None}
    assert known == {"mmstar/CP": 72.8, "mme_cot/F1": 47.7, "amber/Cover": 67.7}


def test_real_lmms_eval_output_is_read(tmp_path: Path) -> None:
    """Results JSONs written by a real lmms-eval 0.7.3 run (see tests/fixtures/eval/README.md)."""
    real = Path(__file__).parent / "fixtures" / "eval" / "lmms_eval_0.7.3_tiny_run"
    run = load_run("tiny", real)
    assert sorted(run.tasks) == [
        "noisygrpo_mme_cot_direct",
        "noisygrpo_mme_cot_reason",
        "noisygrpo_mmerealworld_lite",
        "noisygrpo_mmstar",
    ]
    assert run.tasks["noisygrpo_mme_cot_direct"].value("llm_as_judge_eval") is None  # a list there, not a score
    assert tables.main(["--run", f"tiny={real}", "--out", str(tmp_path), "--no-paper"]) == 0
    assert markdown_rows(tmp_path / "mmstar.md")["tiny"] == ["0.0", "0.0", "0.0", "0.0", "100.0", "100.0", "33.3"]
    assert markdown_rows(tmp_path / "mme_realworld_lite.md")["tiny"] == ["25.0"]
    assert markdown_rows(tmp_path / "mme_cot.md")["tiny"] == ["—", "—", "—", "0.0"]  # no manifest: judge unknown


def test_format_cell_signs_and_rounding() -> None:
    assert format_cell(61.23, RowKind.RUN, 1) == "61.2"
    assert format_cell(-0.04, RowKind.DELTA_VS_BASE, 1) == "+0.0"
    assert format_cell(-0.58, RowKind.DELTA_VS_GRPO, 1) == "-0.6"
    assert format_cell(None, RowKind.PAPER, 1) == "—"
