"""`import verl` alone must register NoisyGRPO's pieces (verl swallows plugin import errors silently)."""

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

import pytest


@dataclass(frozen=True)
class RegistryCheck:
    """One registration to find after a bare ``import verl``.

    ``lookup`` names an attribute of ``module``: a function called with ``key``, or a mapping indexed by it.
    """

    module: str
    lookup: str
    key: str


REGISTRY_CHECKS = [
    RegistryCheck(module="verl.trainer.ppo.core_algos", lookup="get_adv_estimator_fn", key="noisygrpo"),
    RegistryCheck(module="verl.experimental.agent_loop.agent_loop", lookup="_agent_loop_registry", key="noisygrpo_agent"),
    RegistryCheck(module="verl.workers.engine.base", lookup="EngineRegistry._engines", key="noisygrpo_language_model"),
]
# Registered by the CPU backend's own entry point, only with NOISYGRPO_CPU_BACKEND=1.
CPU_CHECKS = [
    RegistryCheck(module="verl.plugin.platform", lookup="PlatformRegistry.registered_names", key="cpu"),
    RegistryCheck(module="verl.workers.rollout.replica", lookup="RolloutReplicaRegistry._registry", key="hf"),
]

# Runs in a fresh interpreter: imports verl only (after argv[2], a module a Ray setup hook imports
# first, if any), then every check; prints one JSON line.
CHILD_SCRIPT = """
import functools, importlib, json, sys
checks = json.loads(sys.argv[1])
if sys.argv[2]:
    importlib.import_module(sys.argv[2])
import verl  # noqa: F401  loads the verl.plugins entry points
results = []
for check in checks:
    try:
        registry = functools.reduce(getattr, check["lookup"].split("."), importlib.import_module(check["module"]))
        if callable(registry) and check["lookup"].endswith("registered_names"):
            entry = check["key"] if check["key"] in registry() else None
        else:
            entry = registry(check["key"]) if callable(registry) else registry[check["key"]]
        results.append({"ok": entry is not None, "detail": repr(entry)})
    except Exception as error:  # report every failing check, not only the first
        results.append({"ok": False, "detail": f"{type(error).__name__}: {error}"})
print(json.dumps(results))
"""


@pytest.mark.parametrize(
    ("extra_env", "first_import"),
    [
        ({}, ""),
        # a CPU-backend Ray worker: the setup hook's module is imported before verl
        (
            {"NOISYGRPO_CPU_BACKEND": "1", "VERL_PLATFORM": "cpu", "VERL_ENGINE_DEVICE": "cuda"},
            "verl_cpu.worker_setup",
        ),
    ],
    ids=["gpu-run", "cpu-backend-worker"],
)
def test_import_verl_registers_noisygrpo(tmp_path, extra_env, first_import):
    env = {key: value for key, value in os.environ.items() if key != "VERL_USE_EXTERNAL_PLUGINS"}
    env.update(extra_env)
    expected = REGISTRY_CHECKS + (CPU_CHECKS if extra_env else [])
    checks = [asdict(check) for check in expected]
    completed = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, json.dumps(checks), first_import],
        cwd=tmp_path,  # not the repo root: registration must come from the installed entry point
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    failures = [
        (check, result["detail"]) for check, result in zip(expected, results, strict=True) if not result["ok"]
    ]
    assert not failures, f"not registered by `import verl`: {failures}"
