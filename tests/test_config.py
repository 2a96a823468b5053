"""verl_ext.config: the ``noisygrpo:`` section, built once, every rule stated there and named in its errors."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from verl_ext.config import EstimatorConfig, NoiseConfig, NoisyGRPOConfig, RewardConfig


def test_defaults_are_the_papers_method():
    assert NoisyGRPOConfig.from_config(None) == NoisyGRPOConfig()
    assert NoiseConfig() == NoiseConfig(
        kind="gaussian",
        levels=(0.0, 0.3, 0.6, 0.9),
        sampling="fixed",
        decay=False,
        decay_total_steps=None,
        conversion="clamp",
    )
    assert EstimatorConfig() == EstimatorConfig(p_alpha=0.01, r_value=0.1, eps=1e-4)
    assert RewardConfig() == RewardConfig(correctness="similarity", mode="reference", similarity_threshold=0.6)


def test_the_recipe_yaml_section_builds():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        config = compose(config_name="noisygrpo_trainer", overrides=["actor_rollout_ref.model.path=/m"])
    section = NoisyGRPOConfig.from_config(config.noisygrpo)
    assert section == NoisyGRPOConfig()


def test_sections_are_read_from_a_dictconfig_or_a_mapping():
    section = OmegaConf.create(
        {"noise": {"kind": "random_patch_mask", "levels": [0, 0.5], "sampling": "uniform"}, "estimator": {"r_value": 0}}
    )
    built = NoisyGRPOConfig.from_config(section)
    assert built.noise == NoiseConfig(kind="random_patch_mask", levels=(0.0, 0.5), sampling="uniform")
    assert built.estimator.r_value == 0.0  # K = 1: the prior alone, a legitimate ablation
    assert NoisyGRPOConfig.from_config({"advantage_log_dir": "/logs"}).advantage_log_dir == "/logs"


BAD_SECTIONS = {
    "noisygrpo.noise.levels[0]": {"noise": {"levels": [0.1, 0.5]}},
    "noisygrpo.noise.levels[1]": {"noise": {"levels": [0.0, 1.5]}},
    "noisygrpo.noise.levels": {"noise": {"levels": []}},
    "noisygrpo.noise.kind": {"noise": {"kind": "salt_and_pepper"}},
    "noisygrpo.noise.sampling": {"noise": {"sampling": "beta"}},
    "noisygrpo.noise.decay_total_steps": {"noise": {"decay_total_steps": 0}},
    "noisygrpo.noise.decay": {"noise": {"decay": "yes"}},
    "noisygrpo.noise.level": {"noise": {"level": [0.0]}},
    "noisygrpo.noise.conversion='wrap'": {"noise": {"conversion": "wrap"}},
    "noisygrpo.noise.conversion='reference' with noisygrpo.noise.kind='random_mask'": {
        "noise": {"conversion": "reference", "kind": "random_mask"}
    },
    "noisygrpo.estimator.p_alpha=0": {"estimator": {"p_alpha": 0}},
    "noisygrpo.estimator.r_value=-1": {"estimator": {"r_value": -1}},
    "noisygrpo.estimator.eps=nan": {"estimator": {"eps": float("nan")}},
    "noisygrpo.estimator.gain": {"estimator": {"gain": 1.0}},
    "'correctness'='fuzzy'": {"reward": {"correctness": "fuzzy"}},
    "'mode'='lenient'": {"reward": {"mode": "lenient"}},
    "'similarity_threshold'='high'": {"reward": {"similarity_threshold": "high"}},
    "noisygrpo.rewards": {"rewards": {}},
}


@pytest.mark.parametrize("key", sorted(BAD_SECTIONS))
def test_every_bad_value_names_its_key(key):
    with pytest.raises(ValueError, match=re.escape(key)):
        NoisyGRPOConfig.from_config(BAD_SECTIONS[key])


def test_decay_horizon_comes_from_the_section_or_the_trainer():
    assert NoiseConfig(decay=True, decay_total_steps=10).resolve_decay_total_steps(None) == 10
    assert NoiseConfig(decay=True).resolve_decay_total_steps(40) == 40
    assert NoiseConfig().resolve_decay_total_steps(None) is None
    with pytest.raises(ValueError, match="decay_total_steps"):
        NoiseConfig(decay=True).resolve_decay_total_steps(None)
