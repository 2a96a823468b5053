"""NoisyGRPOTrainer._compute_advantage against the pure estimator, through verl's own
advantage step, with an in-memory stand-in for the TransferQueue store."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from tensordict import NonTensorData, NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta

import recipe.noisygrpo.trainer as noisygrpo_trainer
from recipe.noisygrpo.trainer import NoisyGRPOTrainer, noise_extents_from_extra_fields
from verl_ext.advantage import bayesian_advantage

LEVELS = [0.0, 0.3, 0.6, 0.9]


class InMemoryTransferQueue:
    """Just enough of transfer_queue's kv API for the advantage step: per-key field storage,
    variable-length fields returned as jagged nested tensors, like the real store."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def kv_batch_get(self, keys, partition_id, select_fields):
        present = [f for f in select_fields if all(f in self.rows[k] for k in keys)]
        out = {}
        for field in present:
            values = [self.rows[k][field] for k in keys]
            if isinstance(values[0], torch.Tensor) and values[0].dim() == 1 and field != "uid":
                out[field] = torch.nested.nested_tensor(values, layout=torch.jagged)
            else:
                out[field] = NonTensorStack(*[NonTensorData(v) for v in values])
        return TensorDict(out, batch_size=len(keys))

    def kv_batch_put(self, keys, partition_id, fields):
        for name, value in fields.items():
            rows = value.unbind(0)
            for key, row in zip(keys, rows, strict=True):
                self.rows[key][name] = row
        return batch_meta(keys, partition_id)


def batch_meta(keys, partition_id="train") -> KVBatchMeta:
    return KVBatchMeta(partition_id=partition_id, keys=list(keys), tags=[{} for _ in keys])


def make_trainer(overrides=()):
    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        config = compose(config_name="noisygrpo_trainer", overrides=list(overrides))
    trainer = NoisyGRPOTrainer.__new__(NoisyGRPOTrainer)  # the advantage step needs only the config
    trainer.config = config
    return trainer


def fill_store(store, num_groups, seed):
    generator = torch.Generator().manual_seed(seed)
    keys, scores, extents, uids = [], [], [], []
    for group in range(num_groups):
        uid = f"uid{group:03d}"
        constant_group = group % 3 == 0  # every third group: all rollouts earn the same reward
        for session, level in enumerate(LEVELS):
            key = f"{uid}_{session}_0"
            length = int(torch.randint(3, 9, (1,), generator=generator))
            score = 1.0 if constant_group else float(torch.randint(0, 3, (1,), generator=generator))
            rm_scores = torch.zeros(length)
            rm_scores[-1] = score
            store.rows[key] = {
                "uid": uid,
                "response_mask": torch.ones(length, dtype=torch.int64),
                "rm_scores": rm_scores,
                "extra_fields": {"noise_extent": level, "noise_seed": 1000 * group + session},
            }
            keys.append(key)
            scores.append(score)
            extents.append(level)
            uids.append(uid)
    return keys, torch.tensor(scores), torch.tensor(extents), np.array(uids, dtype=object)


@pytest.fixture
def store(monkeypatch):
    fake = InMemoryTransferQueue()
    # Both verl's trainer module and ours talk to the store through `tq`.
    monkeypatch.setattr("verl.trainer.ppo.v1.trainer_base.tq", fake)
    monkeypatch.setattr(noisygrpo_trainer, "tq", fake)
    return fake


def test_shuffled_batch_matches_pure_estimator(store):
    keys, scores, extents, uids = fill_store(store, num_groups=6, seed=0)
    expected, _ = bayesian_advantage(scores, extents, uids, p_alpha=0.01, r_value=0.1, eps=1e-4)
    expected_by_key = dict(zip(keys, expected.tolist(), strict=True))

    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)  # batch balancing reorders rows
    assert shuffled != keys
    metrics = {}
    trainer = make_trainer()
    trainer._compute_advantage(batch_meta(shuffled), metrics)

    for key in keys:
        advantages = store.rows[key]["advantages"]
        mask = store.rows[key]["response_mask"].bool()
        assert advantages.shape == mask.shape
        # the same advantage on every response token, 0 outside
        torch.testing.assert_close(advantages, torch.full_like(advantages, expected_by_key[key]), atol=1e-5, rtol=0)
    assert metrics["noisygrpo/kalman_gain_mean"] == pytest.approx(
        float(bayesian_advantage(scores, extents, uids)[1].kalman_gain.mean()), abs=1e-6
    )
    assert any(name.startswith("noisygrpo/reward@noise_") for name in metrics)


def test_estimator_settings_come_from_the_noisygrpo_section(store):
    keys, scores, extents, uids = fill_store(store, num_groups=3, seed=2)
    trainer = make_trainer(["noisygrpo.estimator.r_value=2.0", "noisygrpo.estimator.p_alpha=0.5"])
    trainer._compute_advantage(batch_meta(keys), {})
    expected, _ = bayesian_advantage(scores, extents, uids, p_alpha=0.5, r_value=2.0, eps=1e-4)
    got = torch.stack([store.rows[k]["advantages"][0] for k in keys])
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)
    default, _ = bayesian_advantage(scores, extents, uids)
    assert not torch.allclose(got, default.float(), atol=1e-3)


def test_grpo_baseline_takes_verls_path_untouched(store):
    keys, scores, extents, uids = fill_store(store, num_groups=3, seed=3)
    for key in keys:  # the baseline needs no noise extents at all
        del store.rows[key]["extra_fields"]
    metrics = {}
    make_trainer(["algorithm.adv_estimator=grpo"])._compute_advantage(
        batch_meta(keys), metrics
    )
    assert all("advantages" in store.rows[k] for k in keys)
    assert not any(name.startswith("noisygrpo/") for name in metrics)


def test_row_without_noise_extent_is_a_clear_error():
    with pytest.raises(KeyError, match="uid7_2_0.*noisygrpo_agent"):
        noise_extents_from_extra_fields([{"noise_extent": 0.3}, {"other": 1}], ["uid7_1_0", "uid7_2_0"])
    extents = noise_extents_from_extra_fields([NonTensorData({"noise_extent": 0.6})], ["k"])
    assert extents.tolist() == [pytest.approx(0.6)]


def test_advantage_log_records_what_verl_stored(store, tmp_path):
    import json

    keys, scores, extents, uids = fill_store(store, num_groups=3, seed=4)
    trainer = make_trainer([f"noisygrpo.advantage_log_dir={tmp_path}"])
    trainer.global_steps = 7
    trainer._compute_advantage(batch_meta(keys[::-1]), {})
    records = [json.loads(line) for line in (tmp_path / "advantages.jsonl").read_text().splitlines()]
    assert len(records) == len(keys)
    by_key = {r["key"]: r for r in records}
    expected, _ = bayesian_advantage(scores, extents, uids)
    for row, key in enumerate(keys):
        record = by_key[key]
        assert record["step"] == 7 and record["uid"] == uids[row]
        assert record["score"] == pytest.approx(float(scores[row]))
        assert record["noise_extent"] == pytest.approx(float(extents[row]))
        assert record["advantage"] == pytest.approx(float(store.rows[key]["advantages"][0]))
        assert record["advantage"] == pytest.approx(float(expected[row]), abs=1e-5)


def test_benchmark_alternating_trainer_runs_each_steps_estimator(store, monkeypatch):
    """benchmarks._alternating.AlternatingTrainer: the Bayesian advantage on NoisyGRPO steps, verl's grpo on the others."""
    from benchmarks import _alternating

    monkeypatch.setenv(_alternating.PARITY_ENV, "1")  # NoisyGRPO on odd steps
    keys, scores, extents, uids = fill_store(store, num_groups=3, seed=5)
    trainer = _alternating.AlternatingTrainer.__new__(_alternating.AlternatingTrainer)
    trainer.config = make_trainer().config
    bayesian, _ = bayesian_advantage(scores, extents, uids)

    trainer.global_steps = 3
    metrics = {}
    trainer._compute_advantage(batch_meta(keys), metrics)
    got = torch.stack([store.rows[k]["advantages"][0] for k in keys])
    torch.testing.assert_close(got, bayesian.float(), atol=1e-5, rtol=0)
    assert metrics[_alternating.VARIANT_METRIC] == 1.0 and "noisygrpo/kalman_gain_mean" in metrics

    trainer.global_steps = 4
    metrics = {}
    trainer._compute_advantage(batch_meta(keys), metrics)
    got = torch.stack([store.rows[k]["advantages"][0] for k in keys])
    grouped = {}
    for score, uid in zip(scores.tolist(), uids, strict=True):
        grouped.setdefault(uid, []).append(score)
    expected = [
        (score - np.mean(grouped[uid])) / (np.std(grouped[uid], ddof=1) + 1e-6)
        for score, uid in zip(scores.tolist(), uids, strict=True)
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)
    assert metrics[_alternating.VARIANT_METRIC] == 0.0
    assert not any(name.startswith("noisygrpo/") for name in metrics)


def test_benchmark_alternating_parity_must_be_set(monkeypatch):
    from benchmarks import _alternating

    monkeypatch.delenv(_alternating.PARITY_ENV, raising=False)
    with pytest.raises(RuntimeError, match=_alternating.PARITY_ENV):
        _alternating.noisy_parity()
    monkeypatch.setenv(_alternating.PARITY_ENV, "2")
    with pytest.raises(RuntimeError, match="0 or 1"):
        _alternating.noisy_parity()


# verl 0.9.1's TaskRunnerV1.run, which _NoisyGRPOTaskRunner.run copies with the trainer class swapped
# (and without the pprint of the whole config). A new verl changes this hash: re-read upstream's run,
# carry its changes into recipe/noisygrpo/trainer.py, then update the hash.
UPSTREAM_TASK_RUNNER_RUN_SHA256 = "26be986901db888bb7ccbec7a7b8eb90365de42a426e6fbf119e6e8d445dde7c"


def test_the_copied_task_runner_run_still_matches_the_pinned_upstream_source():
    import hashlib
    import inspect

    from verl.trainer.main_ppo import TaskRunnerV1

    source = inspect.getsource(TaskRunnerV1.__ray_actor_class__.run)
    assert hashlib.sha256(source.encode()).hexdigest() == UPSTREAM_TASK_RUNNER_RUN_SHA256, (
        "verl's TaskRunnerV1.run changed; recipe/noisygrpo/trainer.py copies it. Upstream now reads:\n" + source
    )


def test_make_task_runner_builds_the_given_trainer():
    class MyTrainer(NoisyGRPOTrainer):
        pass

    runner = noisygrpo_trainer.make_task_runner(MyTrainer)
    assert runner.__ray_metadata__.modified_class.trainer_cls is MyTrainer
    assert noisygrpo_trainer.NoisyGRPOTaskRunner.__ray_metadata__.modified_class.trainer_cls is NoisyGRPOTrainer
