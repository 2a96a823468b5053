"""The paper's tables (docs/algorithm.md §6) as data: which lmms-eval task and metric fills each column.

Metric names and scales are lmms-eval 0.7.3's (see README.md): MMStar and MME-RealWorld-Lite
report fractions in [0, 1] (shown in %), AMBER's aggregations already return percentages.
A column whose ``metric`` is None has no lmms-eval source (MME-CoT precision / recall / F1 come
from the official MME-CoT toolkit); only the paper row can fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

from recipe.noisygrpo.eval.benchmarks import task_alias

PERCENT_OF_FRACTION = 100.0


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
        key: stable id ``<table>/<header>``, used by the paper-values file.
        header: column title.
        metric: lmms-eval metric name (the part before ``,<filter>``), or None.
        scale: displayed value = lmms-eval value * scale.
        lower_is_better: shown as an arrow in the header.
        needs_judge: the value is only real when an LLM judge key was set.
    """

    key: str
    header: str
    metric: str | None
    scale: float = 1.0
    lower_is_better: bool = False
    needs_judge: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One table: rows are runs, columns come from one lmms-eval task.

    ``task`` is the upstream task name; results are looked up under our include-path alias first
    (``noisygrpo_<task>``, what ``evaluate_checkpoint`` runs), then the upstream name (a stock run).
    """

    key: str
    title: str
    task: str
    columns: tuple[Column, ...]
    notes: tuple[str, ...] = ()

    @property
    def task_names(self) -> tuple[str, str]:
        return (task_alias(self.task), self.task)


def _columns(table: str, spec: tuple[tuple[str, str | None], ...], **common) -> tuple[Column, ...]:
    return tuple(Column(key=f"{table}/{header}", header=header, metric=metric, **common) for header, metric in spec)


MMSTAR = TableSpec(
    key="mmstar",
    title="MMStar (accuracy, %)",
    task="mmstar",
    columns=_columns(
        "mmstar",
        (
            ("CP", "coarse perception"),
            ("FP", "fine-grained perception"),
            ("IR", "instance reasoning"),
            ("LR", "logical reasoning"),
            ("ST", "science & technology"),
            ("MA", "math"),
            ("AVG", "average"),
        ),
        scale=PERCENT_OF_FRACTION,
    ),
    notes=("AVG is lmms-eval's `average`: the mean over MMStar's 18 sub-categories.",),
)

AMBER = TableSpec(
    key="amber",
    title="AMBER generative (%)",
    task="amber_g",
    columns=(
        Column("amber/CHAIR", "CHAIR", "amber_chair", lower_is_better=True),
        Column("amber/Cover", "Cover", "amber_cover"),
        Column("amber/Hal", "Hal", "amber_hal", lower_is_better=True),
        Column("amber/Cog", "Cog", "amber_cog", lower_is_better=True),
    ),
    notes=(
        "Lower is better for CHAIR, Hal and Cog (AMBER's definitions; lmms-eval's YAML marks amber_cog "
        "higher_is_better, which we do not follow).",
        "AMBER's discriminative accuracy / F1 have no lmms-eval 0.7.3 task and are not reported.",
    ),
)

MME_REALWORLD_LITE = TableSpec(
    key="mme_realworld_lite",
    title="MME-RealWorld-Lite (accuracy, %)",
    task="mmerealworld_lite",
    columns=(Column("mme_realworld_lite/Overall", "Overall", "mme_realworld_score", scale=PERCENT_OF_FRACTION),),
)

MME_COT = TableSpec(
    key="mme_cot",
    title="MME-CoT (%)",
    task="mme_cot_reason",
    columns=(
        Column("mme_cot/Precision", "Precision", None),
        Column("mme_cot/Recall", "Recall", None),
        Column("mme_cot/F1", "F1", None),
        Column("mme_cot/JudgeAcc", "Acc (judge)", "llm_as_judge_eval", scale=PERCENT_OF_FRACTION, needs_judge=True),
    ),
    notes=(
        "Precision, recall and F1 are scored by the official MME-CoT toolkit (GPT-4o judges) from the "
        "submission files lmms-eval writes; lmms-eval 0.7.3 does not compute them.",
        "Acc (judge) is lmms-eval's `llm_as_judge_eval` on mme_cot_reason: a GPT judge's yes/no on the answer.",
    ),
)

TABLES: tuple[TableSpec, ...] = (MMSTAR, AMBER, MME_REALWORLD_LITE, MME_COT)


def all_column_keys() -> tuple[str, ...]:
    return tuple(column.key for table in TABLES for column in table.columns)
