"""The step a resumed run starts after always has its metrics logged.

verl 0.9.1's fit saves step S's checkpoint (tracker included) before it validates and logs S's
metrics; a run stopped in between resumed after S with no record of S (the CI failure of the
Ctrl-C test). NoisyGRPOTrainer saves S at the start of step S+1, or when fit returns.

These tests drive verl's own ``PPOTrainer.fit`` and ``_save_checkpoint`` with stand-ins for the
Ray workers, the transfer queue and the step's work (seconds, no Ray), and check at every point
where a run could be stopped (inside a step, inside validation) that the tracker names a step
whose metrics are in ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import verl.trainer.ppo.v1.trainer_base as trainer_base
from hydra import compose, initialize_config_module
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import PPOTrainerSync

import recipe.noisygrpo.trainer as noisygrpo_trainer
from recipe.noisygrpo.checkpoints import last_checkpoint
from recipe.noisygrpo.metrics_log import read_records
from recipe.noisygrpo.trainer import NoisyGRPOTrainer

STEPS = 3


class FakeWorkers:
    """The actor worker group's save (writes what verl's FSDP checkpoint manager would, in small)."""

    def __init__(self):
        self.saved_steps = []

    def save_checkpoint(self, local_path, remote_path, global_step, max_ckpt_to_keep=None):
        Path(local_path).mkdir(parents=True, exist_ok=True)
        (Path(local_path) / "model_world_size_1_rank_0.pt").write_text(str(global_step))
        self.saved_steps.append(global_step)


def logged_steps(metrics_path: Path) -> set[int]:
    return {record["step"] for record in read_records(metrics_path)} if metrics_path.exists() else set()


def tracker_step(checkpoint_dir: Path) -> int | None:
    found = last_checkpoint(checkpoint_dir)
    return found[0] if found else None


def make_fit_trainer(trainer_cls, tmp_path: Path, monkeypatch):
    """A ``trainer_cls`` whose fit is verl's, with the workers and the step's work stood in.

    Returns ``(trainer, stops)``: ``stops`` records, at every place a run could be killed
    (mid-step, mid-validation), ``(where, step, tracker step, steps logged)``.
    """
    checkpoint_dir = tmp_path / "checkpoints"
    metrics_path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics_path))
    monkeypatch.setattr(trainer_base, "tq", SimpleNamespace(kv_clear=lambda keys, partition_id: None))
    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        config = compose(
            config_name="noisygrpo_trainer",
            overrides=[
                "trainer.logger=[file]",
                "trainer.save_freq=1",
                "trainer.test_freq=1",
                "trainer.val_before_train=false",
                f"trainer.default_local_dir={checkpoint_dir}",
            ],
        )
    trainer = trainer_cls.__new__(trainer_cls)
    trainer.config = config
    trainer.global_steps = 0
    trainer.total_training_steps = STEPS
    trainer.steps_per_epoch = STEPS
    trainer.trainer_mode = "sync"
    trainer.use_critic = False
    trainer.actor_rollout_wg = FakeWorkers()
    trainer.train_dataloader = SimpleNamespace(state_dict=lambda: {"consumed": trainer.global_steps})
    trainer.checkpoint_callback = SimpleNamespace(on_save=lambda **kwargs: None)
    trainer.checkpoint_manager = SimpleNamespace(update_weights=lambda step: None)
    trainer._dump_futures, trainer._dump_executor = [], SimpleNamespace(shutdown=lambda wait: None)

    stops = []

    def stop_here(where):
        stops.append((where, trainer.global_steps, tracker_step(checkpoint_dir), logged_steps(metrics_path)))

    def step(metrics, timing_raw):
        stop_here("step")
        return KVBatchMeta(partition_id="train", keys=[], tags=[])

    def validate():
        stop_here("validation")
        return {"val-core/score": 1.0}

    trainer.step = step
    trainer._validate = validate
    trainer._reissue_inflight_prompts = lambda: 0
    trainer._start_profiling = trainer._stop_profiling = lambda: None
    trainer._compute_metrics = lambda batch, metrics, timing_raw, global_steps, epoch: metrics.update(
        {f"timing_s/{name}": seconds for name, seconds in timing_raw.items()}
    )
    return trainer, stops


def test_every_checkpoint_is_saved_after_its_steps_metrics_are_logged(tmp_path, monkeypatch):
    trainer, stops = make_fit_trainer(NoisyGRPOTrainer, tmp_path, monkeypatch)
    trainer.fit(agent_loop_manager=None)
    assert trainer.save_due_checkpoint() == STEPS  # what the task runner does when fit returns
    assert trainer.save_due_checkpoint() is None

    assert [(where, step) for where, step, *_ in stops] == [
        (where, step) for step in range(1, STEPS + 1) for where in ("step", "validation")
    ]
    for where, step, tracker, logged in stops:
        assert tracker is None or tracker in logged, f"stopped in {where} of step {step}: tracker {tracker}, {logged=}"
        assert tracker == (step - 1 or None)  # every step before this one is checkpointed, none after
    # The checkpoints are verl's, whole, named after their own step and saved once each.
    assert trainer.actor_rollout_wg.saved_steps == [1, 2, 3]
    assert trainer.global_steps == STEPS + 1
    step, folder = last_checkpoint(tmp_path / "checkpoints")
    assert step == STEPS and (folder / "data.pt").is_file()
    assert (folder / "actor" / "model_world_size_1_rank_0.pt").read_text() == str(STEPS)
    # The save time of step S is part of step S+1's timing (verl's timers add up).
    records = read_records(tmp_path / "metrics.jsonl")
    assert ["timing_s/save_checkpoint" in record["data"] for record in records] == [True, True, True]
    assert records[1]["data"]["timing_s/save_checkpoint"] > records[0]["data"]["timing_s/save_checkpoint"]


def test_verls_own_order_leaves_the_tracker_on_a_step_without_metrics(tmp_path, monkeypatch):
    """The failure the trainer's order prevents, shown on the same harness (so the check above can fail)."""

    class VerlOrder(NoisyGRPOTrainer):
        _save_checkpoint = PPOTrainerSync._save_checkpoint

    trainer, stops = make_fit_trainer(VerlOrder, tmp_path, monkeypatch)
    trainer.fit(agent_loop_manager=None)
    unlogged = [
        (where, step) for where, step, tracker, logged in stops if tracker is not None and tracker not in logged
    ]
    assert unlogged == [("validation", step) for step in range(1, STEPS + 1)]


@pytest.mark.parametrize("fails_in", [None, "validation", "step"])
def test_task_runner_saves_the_due_checkpoint_when_fit_ends_or_fails(tmp_path, monkeypatch, fails_in):
    """The task runner saves the last step's checkpoint after fit; when training fails after a
    step's update (in validation), that step's weights are kept, as verl would have kept them.
    ``fails_in=None``: training does not fail."""
    trainer, stops = make_fit_trainer(NoisyGRPOTrainer, tmp_path, monkeypatch)
    real_validate, real_step = trainer._validate, trainer.step

    def failing(real):
        def call(*args):
            if trainer.global_steps == 2:
                raise RuntimeError(f"out of memory in {fails_in}")
            return real(*args)

        return call

    if fails_in == "validation":
        trainer._validate = failing(real_validate)
    elif fails_in == "step":
        trainer.step = failing(real_step)

    class Runner(noisygrpo_trainer._NoisyGRPOTaskRunner):
        trainer_cls = staticmethod(lambda config: trainer)

        def init_agent_loop_manager(self):
            self.agent_loop_manager = None

    trainer.init = lambda: None
    monkeypatch.setattr(noisygrpo_trainer, "tq", SimpleNamespace(init=lambda config: None, close=lambda: None))
    if fails_in is None:
        Runner().run(trainer.config)
    else:
        with pytest.raises(RuntimeError, match=f"out of memory in {fails_in}"):
            Runner().run(trainer.config)
    # Failing in step 2's validation: step 2 was trained, its checkpoint is kept. Failing inside step
    # 2 (before its update): step 1's checkpoint, saved when step 2 began, is the last.
    expected = {None: STEPS, "validation": 2, "step": 1}[fails_in]
    assert last_checkpoint(tmp_path / "checkpoints")[0] == expected
    assert trainer.actor_rollout_wg.saved_steps == list(range(1, expected + 1))
