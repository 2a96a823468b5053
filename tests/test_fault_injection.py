"""Fault injection: a run stopped by Ctrl-C, SIGTERM or ``kill -9`` loses nothing and leaves nothing running.

* ``run_on_cpu`` passes Ctrl-C / SIGTERM to the whole run, reaps processes that left the run's
  session or blanked their environment, and kills a driver that ignores the interrupt (stand-in
  entry point, seconds);
* SIGINT to the demo's process group stops training, leaves no process and a complete log, names the
  last checkpoint and exits 130 (e2e);
* ``kill -9`` of every process of a run in the middle of a step: the tracker names a complete
  checkpoint, the resumed launch finishes, no log has a missing or duplicated step, and the resumed
  seeded run reproduces the uninterrupted run's responses, rewards and advantages exactly (e2e).

The other faults of this family are tested beside their code: pre-flight errors in
``test_preflight.py``, hostile data in ``test_data_prep_hostile.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from recipe.noisygrpo.checkpoints import last_checkpoint
from recipe.noisygrpo.demo.run_demo import DemoSettings, demo_overrides, read_step_metrics, train_on_cpu
from recipe.noisygrpo.metrics_log import read_advantage_rows
from verl_cpu.launch import pids_with_env, run_on_cpu, session_pids

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# run_on_cpu and interrupts, with a stand-in driver (no Ray, seconds)
# ---------------------------------------------------------------------------------------------

# Two grandchildren the marker search alone would miss or the process group alone would miss:
# one stays in the session with an empty environment (like Ray's dashboard and runtime-env
# agents), one leaves the session but keeps the environment (like a process calling setsid).
_STANDIN_DRIVER = """
import signal, subprocess, sys, time
blank = subprocess.Popen(["sleep", "120"], env={})
detached = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("children", blank.pid, detached.pid, flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("driver stopping on Ctrl-C", flush=True)
    sys.exit(130)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _interrupt_when_started(log: Path, signum: int, done: threading.Event) -> threading.Thread:
    """Send ``signum`` to this process once the stand-in driver has started its children."""

    def watch():
        while not done.is_set():
            if log.exists() and "children" in log.read_text():
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("mode", "signum", "expected_exit"),
    [("stop", signal.SIGTERM, 130), ("ignore", signal.SIGINT, -signal.SIGTERM)],
    ids=["driver-stops-on-the-passed-interrupt", "driver-ignoring-it-is-killed"],
)
def test_an_interrupt_reaches_the_whole_run_and_reaps_every_process(tmp_path, mode, signum, expected_exit):
    (tmp_path / "standin_driver.py").write_text(_STANDIN_DRIVER)
    log = tmp_path / "run.log"
    handler_before = signal.getsignal(signal.SIGINT)
    done = threading.Event()
    _interrupt_when_started(log, signum, done)
    try:
        result = run_on_cpu(
            "standin_driver",
            [mode],
            workdir=tmp_path,
            log_path=log,
            extra_env={"PYTHONPATH": str(tmp_path)},
            grace_s=1,
            interrupt_grace_s=2,
            timeout_s=60,
        )
    finally:
        done.set()
    text = log.read_text()
    children = [int(pid) for pid in text.split("children ")[1].split()[:2]]
    assert result.interrupted_by == signum and result.returncode == expected_exit, text
    assert not result.timed_out and result.elapsed_s < 20
    assert ("driver stopping on Ctrl-C" in text) == (mode == "stop")  # SIGTERM arrives at the driver as SIGINT
    assert f"[run_on_cpu] stopped by {signal.Signals(signum).name} (exit {expected_exit})" in text
    # The detached grandchild is found by its marker only; the blank one (when the driver's process
    # group was not killed) by its session only.
    assert children[1] in result.leftovers and set(result.leftovers) <= set(children)
    assert f"[run_on_cpu] killed processes that outlived the run: {result.leftovers}" in text
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in children)
    assert signal.getsignal(signal.SIGINT) is handler_before


# ---------------------------------------------------------------------------------------------
# e2e: SIGINT to the demo, kill -9 mid-step and a replay of the resumed run
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    from data_prep.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=16, num_val=4, seed=0)


def _processes_with(key: str, value: str) -> set[int]:
    """Every process carrying ``key=value`` or sharing a session with one that does (Ray's agents blank their env)."""
    tagged = pids_with_env(key, value)
    sessions = set()
    for pid in tagged:
        try:
            sessions.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]))
        except OSError:
            continue
    return set(tagged).union(*(session_pids(session) for session in sessions))


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.e2e
def test_sigint_to_the_demo_stops_every_process_keeps_a_complete_log_and_exits_130(tmp_path, tiny_qwen25vl_dir):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "tiny_qwen25vl").symlink_to(tiny_qwen25vl_dir)  # the demo builds nothing it finds
    tag = uuid.uuid4().hex
    output_file = tmp_path / "demo.out"
    demo = subprocess.Popen(
        [sys.executable, "-m", "recipe.noisygrpo.demo.run_demo", "--workdir", str(workdir), "--steps", "50"]
        + ["trainer.save_freq=1"],
        cwd=REPO,
        env={**os.environ, "FAULT_INJECTION_TAG": tag},
        stdout=output_file.open("w"),  # a file, not a pipe: the demo echoes the whole training log
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal gives a foreground job
    )
    try:
        tracker = workdir / "checkpoints" / "latest_checkpointed_iteration.txt"
        _wait_for(lambda: tracker.exists() or demo.poll() is not None, 900, "the first checkpoint")
        assert demo.poll() is None, output_file.read_text()[-5000:]
        run = _processes_with("FAULT_INJECTION_TAG", tag)
        assert len(run) > 10  # the demo, the driver, Ray's services and workers
        interrupted = time.monotonic()
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        demo.wait(timeout=180)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    stopped_in = time.monotonic() - interrupted
    output = output_file.read_text()
    time.sleep(1)
    assert demo.returncode == 130, output[-5000:]
    assert not [pid for pid in run if _alive(pid)], "processes of the run survived the interrupt"
    assert not _processes_with("FAULT_INJECTION_TAG", tag)
    step, folder = last_checkpoint(workdir / "checkpoints")
    assert f"last complete checkpoint: {folder} (step {step})" in output
    assert "Traceback" not in output.split("[noisygrpo] interrupted")[-1]
    # Complete logs: every line of the metrics log parses, one record per trained step.
    steps = [record["step"] for record in read_step_metrics(workdir / "metrics.jsonl")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= step
    train_log = (workdir / "train.log").read_text()
    assert "[noisygrpo] interrupted (Ctrl-C): training stopped" in train_log
    assert train_log.rstrip().endswith("[run_on_cpu] stopped by SIGINT (exit 130)") or "outlived the run" in train_log
    print(f"stopped {stopped_in:.1f} s after SIGINT, {len(run)} processes reaped, checkpoint of step {step}")


REPLAY_STEPS = 3


def _replay_overrides(workdir: Path, model_dir: Path, data_files: dict) -> list[str]:
    return [
        *demo_overrides(model_dir, data_files, workdir, DemoSettings(steps=REPLAY_STEPS)),
        "noisygrpo.seeded_sampling=true",
        "trainer.save_freq=1",
        f"trainer.rollout_data_dir={workdir / 'rollouts'}",
    ]


def _launch(workdir: Path, overrides: list[str], **kwargs):
    return train_on_cpu(workdir, overrides, timeout_s=1200, **kwargs)


def _kill_9_during_step(workdir: Path, step: int, tag: str, stop: threading.Event) -> threading.Thread:
    """Once ``step``'s advantages are logged (the actor update and the checkpoint still to come),
    SIGKILL every process of the run at once, as a lost node would."""
    log = workdir / "advantages" / "advantages.jsonl"

    def watch():
        while not stop.is_set():
            if log.exists() and f'"step": {step},' in log.read_text():
                for pid in _processes_with("FAULT_INJECTION_TAG", tag):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _rollouts(workdir: Path) -> dict[int, list[tuple]]:
    """verl's rollout dump (one file per step, rewritten when a step is re-run): (prompt, response, score)."""
    dumped = {}
    for file in sorted((workdir / "rollouts").glob("*.jsonl")):
        rows = [json.loads(line) for line in file.read_text().splitlines()]
        dumped[int(file.stem)] = sorted((row["input"], row["output"], row["score"]) for row in rows)
    return dumped


def _advantages_by_step(workdir: Path) -> dict[int, list[tuple]]:
    by_step = defaultdict(list)
    for row in read_advantage_rows(workdir / "advantages"):
        by_step[row["step"]].append((row["noise_extent"], row["score"], row["advantage"]))
    return {step: sorted(rows) for step, rows in by_step.items()}


@pytest.mark.e2e
def test_kill_9_mid_step_resumes_from_a_complete_checkpoint_and_replays_the_uninterrupted_run(
    tmp_path, tiny_qwen25vl_dir, data_files
):
    reference = tmp_path / "uninterrupted"
    result = _launch(reference, _replay_overrides(reference, tiny_qwen25vl_dir, data_files))
    assert result.returncode == 0, result.log_path.read_text()[-5000:]

    crashed = tmp_path / "crashed"
    overrides = _replay_overrides(crashed, tiny_qwen25vl_dir, data_files)
    tag, stop = uuid.uuid4().hex, threading.Event()
    _kill_9_during_step(crashed, 2, tag, stop)
    try:
        killed = _launch(crashed, overrides, extra_env={"FAULT_INJECTION_TAG": tag}, grace_s=5)
    finally:
        stop.set()
    assert killed.returncode == -signal.SIGKILL, killed.log_path.read_text()[-5000:]
    # The tracker names a checkpoint whose every part is on disk (verl writes it last).
    step, folder = last_checkpoint(crashed / "checkpoints")
    assert step == 1, f"killed after step 2 was checkpointed: {step}"
    assert (folder / "data.pt").is_file() and any((folder / "actor").glob("model_world_size_*_rank_0.pt"))
    first_launch_steps = {row["step"] for row in read_advantage_rows(crashed / "advantages")}
    assert first_launch_steps == {1, 2}  # step 2's rows were written: the kill was mid-step

    resumed = _launch(crashed, overrides)
    assert resumed.returncode == 0 and resumed.leftovers == [], resumed.log_path.read_text()[-5000:]

    # No log misses or repeats a step; the re-run step 2 comes from the second launch.
    metrics_steps = [record["step"] for record in read_step_metrics(crashed / "metrics.jsonl")]
    assert metrics_steps == list(range(1, REPLAY_STEPS + 1))
    rows_per_step = Counter(row["step"] for row in read_advantage_rows(crashed / "advantages"))
    assert rows_per_step == {step: DemoSettings().prompts_per_step * 4 for step in range(1, REPLAY_STEPS + 1)}
    assert sorted(_rollouts(crashed)) == list(range(1, REPLAY_STEPS + 1))
    train_log = (crashed / "train.log").read_text()
    assert train_log.count("[run_on_cpu] launch at ") == 2

    # Replay: the resumed seeded run equals the uninterrupted one, step for step, exactly.
    assert _rollouts(crashed) == _rollouts(reference)
    assert _advantages_by_step(crashed) == _advantages_by_step(reference)
