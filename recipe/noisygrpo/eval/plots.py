"""Training dynamics of one or several runs on shared axes (PNG + SVG, matplotlib).

    python -m recipe.noisygrpo.eval.plots --log noisygrpo=OUT/metrics.jsonl --log grpo=OUT2/metrics.jsonl \
        --out plots/ [--smooth 5]

``--log [NAME=]PATH``: verl's ``file``-logger JSONL or tensorboard events (file or folder). One
figure per panel (``<panel>.png`` / ``.svg``) plus ``training_dynamics.png`` / ``.svg`` with every
panel that has data. Metrics are matched by pattern, so every key starting with
``noisygrpo/reward@noise_`` is a series of the noise-level panel whatever its level formatting.
A run without a panel's metric (e.g. the GRPO baseline has no ``noisygrpo/*``) is left out of it.

Logs read: verl's ``file`` logger (JSON lines ``{"step": <int>, "data": {"<metric>": <number>}}``
at ``$VERL_FILE_LOGGER_PATH``, or ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``) and
tensorboard event files (one scalar per metric and step). A JSONL log is read with the files of
later launches of the same run (``metrics.launch2.jsonl`` ...; ``recipe.noisygrpo.metrics_log``).
When a step is logged more than once, the last value wins; non-finite values are dropped (verl
logs NaN for empty statistics).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recipe.noisygrpo.metrics_log import read_records  # noqa: E402

TENSORBOARD_PREFIX = "events.out.tfevents"


@dataclass(frozen=True)
class Series:
    """One metric over training: ``steps`` (int, ascending, unique) and ``values`` (float)."""

    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class TrainingLog:
    name: str
    source: Path
    series: dict[str, Series]


def _to_series(points: dict[str, dict[int, float]]) -> dict[str, Series]:
    series = {}
    for metric, by_step in points.items():
        steps = sorted(by_step)
        series[metric] = Series(np.asarray(steps, dtype=np.int64), np.asarray([by_step[s] for s in steps], dtype=float))
    return series


def _add_point(points: dict[str, dict[int, float]], metric: str, step: int, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return
    points.setdefault(metric, {})[step] = float(value)


def read_jsonl(path: Path) -> dict[str, Series]:
    """Parse a ``file``-logger JSONL with every launch of it (``recipe.noisygrpo.metrics_log``).

    Raises ValueError naming the file and line when malformed; a broken last line is tolerated
    with a warning (the run was killed mid-write).
    """
    points: dict[str, dict[int, float]] = {}
    for record in read_records(path):
        for metric, value in record["data"].items():
            _add_point(points, metric, record["step"], value)
    return _to_series(points)


def read_tensorboard(path: Path) -> dict[str, Series]:
    """Scalars of a tensorboard event file, or of every event file in a folder."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = [path] if path.is_file() else sorted(path.rglob(f"{TENSORBOARD_PREFIX}*"))
    if not files:
        raise FileNotFoundError(f"{path}: no tensorboard event files ({TENSORBOARD_PREFIX}*)")
    points: dict[str, dict[int, float]] = {}
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get(SCALARS, []):
            for event in accumulator.Scalars(tag):
                _add_point(points, tag, int(event.step), event.value)
    return _to_series(points)


def read_log(name: str, path: Path) -> TrainingLog:
    """Dispatch on the path: ``*.jsonl`` / ``*.json`` -> file logger; event file or folder -> tensorboard."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log {name!r}: {path} does not exist")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        series = read_jsonl(path)
    elif path.is_dir() or path.name.startswith(TENSORBOARD_PREFIX):
        series = read_tensorboard(path)
    else:
        raise ValueError(f"log {name!r}: {path} is neither a .jsonl file (verl file logger) nor tensorboard events")
    return TrainingLog(name=name, source=path, series=series)


LINESTYLES = ("-", "--", ":", "-.")
OVERVIEW_NAME = "training_dynamics"
LEGEND_INSIDE_MAX = 6


@dataclass(frozen=True)
class Panel:
    """One plot: every metric whose name matches ``pattern`` is a series.

    A named group ``level`` in the pattern splits a run into one series per captured value,
    labelled ``run, <series_label with the value>``.
    """

    key: str
    title: str
    ylabel: str
    pattern: re.Pattern[str]
    series_label: str = "noise {}"


PANELS: tuple[Panel, ...] = (
    Panel("reward", "Reward (mean over rollouts)", "r_sem", re.compile(r"^critic/score/mean$")),
    Panel("reward_std", "Reward std over rollouts", "std of r_sem", re.compile(r"^noisygrpo/reward_std$")),
    Panel("kalman_gain", "Kalman gain K (mean over groups)", "K", re.compile(r"^noisygrpo/kalman_gain(?:_mean)?$")),
    Panel(
        "reward_by_noise",
        "Reward by noise level",
        "r_sem",
        re.compile(r"^noisygrpo/reward@noise_(?P<level>.+)$"),
    ),
    Panel("response_length", "Completion length (mean)", "tokens", re.compile(r"^response_length/mean$")),
    # verl's validation, per data source (a held-out split each): the share of correct answers.
    Panel(
        "heldout_accuracy",
        "Held-out accuracy (verl validation, greedy)",
        "accuracy",
        re.compile(r"^val-aux/(?P<level>[^/]+)/correctness/mean@1$"),
        series_label="{}",
    ),
)
PANELS_BY_KEY = {panel.key: panel for panel in PANELS}


@dataclass(frozen=True)
class PlotSeries:
    run: str
    level: str | None
    series: Series
    level_label: str = "noise {}"

    @property
    def label(self) -> str:
        return self.run if self.level is None else f"{self.run}, {self.level_label.format(self.level)}"


def _level_order(level: str | None) -> tuple[float, str]:
    try:
        return (float(level), "") if level is not None else (-1.0, "")
    except ValueError:
        return (float("inf"), level)


def panel_series(panel: Panel, logs: list[TrainingLog]) -> list[PlotSeries]:
    """The series of ``panel`` in every log, runs in order, noise levels ascending within a run."""
    found = []
    for log in logs:
        matches = []
        for metric, series in log.series.items():
            match = panel.pattern.match(metric)
            if match:
                matches.append(PlotSeries(log.name, match.groupdict().get("level"), series, panel.series_label))
        found += sorted(matches, key=lambda item: _level_order(item.level))
    return found


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (fewer at the start); ``window`` 1 returns ``values``."""
    if window <= 1 or values.size == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def draw_panel(ax: Axes, panel: Panel, logs: list[TrainingLog], smooth: int = 1) -> int:
    """Draw ``panel`` into ``ax``; returns the number of series drawn (lines on the axes)."""
    series = panel_series(panel, logs)
    runs = list(dict.fromkeys(item.run for item in series))
    levels = sorted({item.level for item in series if item.level is not None}, key=_level_order)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, item in enumerate(series):
        run_index = runs.index(item.run)
        if item.level is not None:  # colour = noise level, line style = run
            color, style = colors[levels.index(item.level) % len(colors)], LINESTYLES[run_index % len(LINESTYLES)]
        else:
            color, style = colors[index % len(colors)], "-"
        values = moving_average(item.series.values, smooth)
        ax.plot(item.series.steps, values, linestyle=style, color=color, label=item.label)
    ax.set_title(panel.title)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if len(series) > LEGEND_INSIDE_MAX:  # many runs x levels: a legend inside would hide the lines
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif series:
        ax.legend(fontsize="small")
    return len(series)


def panel_figure(panel: Panel, logs: list[TrainingLog], smooth: int = 1) -> tuple[Figure, int]:
    figure, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    return figure, draw_panel(ax, panel, logs, smooth)


def overview_figure(panels: list[Panel], logs: list[TrainingLog], smooth: int = 1) -> Figure:
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), layout="constrained", squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel, logs, smooth)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return figure


def seed_band_figure(
    curves: dict[str, list[dict[int, dict[str, float]]]], splits: list[str], title: str, ylabel: str
) -> Figure:
    """One axes per split: for each method the mean over seeds (line) and the seeds' min to max (band).

    ``curves[method]`` holds one ``{step: {split: value}}`` per seed; a step missing from some seed
    is averaged over the seeds that have it.
    """
    figure, axes = plt.subplots(
        1, len(splits), figsize=(3.6 * len(splits), 3.4), layout="constrained", squeeze=False, sharey=True
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, split in zip(axes.flat, splits, strict=True):
        for index, (method, per_seed) in enumerate(curves.items()):
            steps = sorted({step for seed in per_seed for step, values in seed.items() if split in values})
            if not steps:
                continue
            values = [[seed[step][split] for seed in per_seed if split in seed.get(step, {})] for step in steps]
            color = colors[index % len(colors)]
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2)
            ax.plot(
                steps,
                [float(np.mean(v)) for v in values],
                color=color,
                marker="o",
                label=f"{method} (n={len(per_seed)})",
            )
        ax.set_title(split)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes.flat[0].set_ylabel(ylabel)
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(title)
    return figure


def plot_seed_bands(
    curves: dict[str, list[dict[int, dict[str, float]]]],
    splits: list[str],
    out: Path,
    stem: str,
    title: str,
    ylabel: str,
) -> tuple[Path, ...]:
    """``seed_band_figure`` written to ``out/<stem>.png`` and ``.svg``."""
    out.mkdir(parents=True, exist_ok=True)
    return _save(seed_band_figure(curves, splits, title, ylabel), out, stem)


@dataclass(frozen=True)
class PanelOutput:
    key: str
    files: tuple[Path, ...]
    n_series: int


def _save(figure: Figure, out: Path, stem: str) -> tuple[Path, ...]:
    files = (out / f"{stem}.png", out / f"{stem}.svg")
    for file in files:
        figure.savefig(file, dpi=150)
    plt.close(figure)
    return files


def plot_logs(
    logs: list[TrainingLog], out: Path, panels: list[Panel] | None = None, smooth: int = 1
) -> list[PanelOutput]:
    """Write one PNG+SVG per panel with data, and the overview; panels without data are skipped."""
    out.mkdir(parents=True, exist_ok=True)
    outputs = []
    for panel in panels or list(PANELS):
        if not panel_series(panel, logs):
            print(f"[plots] {panel.key}: no matching metric in any log, skipped ({panel.pattern.pattern})")
            continue
        figure, n_series = panel_figure(panel, logs, smooth)
        outputs.append(PanelOutput(panel.key, _save(figure, out, panel.key), n_series))
    if outputs:
        drawn = [PANELS_BY_KEY[output.key] for output in outputs]
        outputs.append(PanelOutput(OVERVIEW_NAME, _save(overview_figure(drawn, logs, smooth), out, OVERVIEW_NAME), 0))
    return outputs


def parse_log(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (name: file stem, or folder name for tensorboard folders)."""
    name, sep, path = text.partition("=")
    if sep and name and path:
        return name, Path(path)
    path = Path(text)
    return (path.stem if path.suffix else path.name), path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.noisygrpo.eval.plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log", action="append", required=True, type=parse_log, metavar="[NAME=]PATH")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="output folder (default: plots/)")
    parser.add_argument("--smooth", type=int, default=1, help="trailing moving average over this many steps")
    parser.add_argument("--panels", default=None, help=f"comma-separated subset of {', '.join(PANELS_BY_KEY)}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        panels = [PANELS_BY_KEY[key] for key in args.panels.split(",")] if args.panels else None
    except KeyError as error:
        print(f"error: unknown panel {error}; choose from {', '.join(PANELS_BY_KEY)}", file=sys.stderr)
        return 2
    names = [name for name, _ in args.log]
    if len(set(names)) != len(names):
        print(f"error: log names must be unique, got {names}; name them with --log NAME=PATH", file=sys.stderr)
        return 2
    try:
        logs = [read_log(name, path) for name, path in args.log]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    outputs = plot_logs(logs, args.out, panels, args.smooth)
    if not outputs:
        print("error: no panel metric found in any log; is this a verl metrics log?", file=sys.stderr)
        return 1
    for output in outputs:
        print(f"[plots] {output.key}: {', '.join(str(file) for file in output.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
