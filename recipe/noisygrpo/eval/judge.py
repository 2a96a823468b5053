"""Is an LLM judge configured for lmms-eval's judged metrics (MME-CoT)?

lmms-eval 0.7.3 builds its judge from ``API_TYPE`` (default ``openai``) when a judged task's utils
module is imported; the OpenAI provider reads ``OPENAI_API_KEY`` (and ``OPENAI_API_URL``), the
Azure ones ``AZURE_API_KEY`` + ``AZURE_ENDPOINT``; the judge model of MME-CoT is ``MODEL_VERSION``
(default ``gpt-4o-2024-11-20``). Without a key every judge call fails, lmms-eval scores it 0 and
``llm_as_judge_eval`` reads 0.0: a number that must not reach a table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

DEFAULT_API_TYPE = "openai"
DEFAULT_JUDGE_MODEL = "gpt-4o-2024-11-20"
# lmms-eval's provider that answers "dummy" without any network call.
DUMMY_API_TYPE = "dummy"

# API_TYPE -> environment variables its provider needs. Providers not listed (local, bedrock)
# authenticate in ways we cannot check; they are trusted.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "async_openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_API_KEY", "AZURE_ENDPOINT"),
    "async_azure": ("AZURE_API_KEY", "AZURE_ENDPOINT"),
}


class JudgeMode(str, Enum):
    AUTO = "auto"  # on when the provider's key variables are set
    ON = "on"  # trust the user (e.g. keys in a .env file that lmms-eval loads itself)
    OFF = "off"  # never call a judge


@dataclass(frozen=True)
class JudgeStatus:
    available: bool
    api_type: str
    model: str
    missing_env: tuple[str, ...]
    note: str


def judge_status(mode: JudgeMode, environ: Mapping[str, str]) -> JudgeStatus:
    """Decide whether judged metrics will be real; never reads or records the key values."""
    api_type = environ.get("API_TYPE", DEFAULT_API_TYPE).lower()
    model = environ.get("MODEL_VERSION", DEFAULT_JUDGE_MODEL)
    missing = tuple(name for name in REQUIRED_ENV.get(api_type, ()) if not environ.get(name))
    if mode is JudgeMode.OFF:
        return JudgeStatus(False, api_type, model, missing, "judge switched off (--judge off)")
    if mode is JudgeMode.ON:
        return JudgeStatus(True, api_type, model, missing, "judge assumed configured (--judge on)")
    if missing:
        return JudgeStatus(False, api_type, model, missing, f"no judge key: {', '.join(missing)} not set")
    return JudgeStatus(True, api_type, model, missing, f"judge {api_type}:{model}")
