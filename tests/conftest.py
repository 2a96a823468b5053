"""Shared pytest setup: offline hub, tiny Qwen2.5-VL and Qwen3-VL checkpoints, CUDA-only test skipping."""

from __future__ import annotations

import os

# Set before anything imports transformers/datasets/tokenizers, so nothing reaches a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pathlib  # noqa: E402

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_qwen25vl_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Folder of a tiny random Qwen2.5-VL (seed 0), built once per session; treat it as read-only."""
    from recipe.noisygrpo.demo.tiny_model import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny_qwen25vl") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3vl_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Folder of a tiny random Qwen3-VL (seed 0), built once per session; treat it as read-only."""
    from recipe.noisygrpo.demo.tiny_model import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl") / "model", seed=0)
