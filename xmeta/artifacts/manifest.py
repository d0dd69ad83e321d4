"""The manifest of an xmeta artifact: what it is, what made it, and a digest of every file.

Every directory xmeta publishes holds ``xmeta.json`` (format ``xmeta/2``)::

    DIR/
      xmeta.json            this manifest: kind, encoder config (with the base model's hub id), meta
                            config, training-data summary, step, validation score, per-file sha256
      params.safetensors    the xmeta tensors (LoRA, head; adapted: + prototypes or the episode head)
      training_data.json    kind "meta"/"checkpoint": the sentences meta-training and validation read
      adapter/              peft's own format (adapter_config.json, adapter_model.safetensors) and the
                            head beside it (head.safetensors): loads with plain transformers + peft
      README.md             model card with the Hub's YAML front matter

Kinds: ``meta`` (a meta-trained model: a run's ``final/`` or ``best/``, the shipped default, a soup),
``adapted`` (``xmeta adapt --out``) and ``checkpoint`` (a resumable training state,
``<run>/checkpoints/step-N``, which also loads as a meta model).

Directories written before this format (``xmeta_meta.json`` + ``meta_params.safetensors``,
``xmeta_adapted.json`` + ``adapted.safetensors``) are read through ``read_manifest``'s compatibility
path: they carry no digests, so they load with a warning; ``xmeta artifacts migrate DIR`` rewrites
them. This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmeta.errors import InputError

logger = logging.getLogger(__name__)

FORMAT = "xmeta/2"
MANIFEST = "xmeta.json"
PARAMS = "params.safetensors"
CARD = "README.md"
TRAINING_DATA = "training_data.json"
ADAPTER_DIR = "adapter"
KINDS = ("meta", "adapted", "checkpoint")
# Files of the formats before xmeta/2: manifest name -> (kind, format tag, tensor file).
LEGACY = {
    "xmeta_meta.json": ("meta", "xmeta-meta/1", "meta_params.safetensors"),
    "xmeta_adapted.json": ("adapted", "xmeta-adapted/1", "adapted.safetensors"),
}
_WHAT_MADE = {"meta": "`xmeta train`", "checkpoint": "`xmeta train`", "adapted": "`xmeta adapt --out`"}
_legacy_warned: set[Path] = set()


class ArtifactError(InputError):
    """An artifact that is missing, of the wrong kind, of an unknown format, or corrupt."""


@dataclass(frozen=True)
class FileEntry:
    """Size and sha256 of one file of an artifact."""

    sha256: str
    bytes: int


@dataclass
class Manifest:
    """The typed content of ``xmeta.json``.

    Attributes:
        kind: "meta", "adapted" or "checkpoint".
        encoder: ``EncoderConfig`` as a dict (``encoder["model"]`` is what xmeta resolves).
        meta: ``MetaConfig`` as a dict.
        base_model: the encoder's Hugging Face Hub id (what plain transformers/peft load).
        training: ``{"task", "splits_by_lang", "sha256"}`` of the data meta-training read (the ids
            are in ``training_data.json``); None for an adapted model (see ``info["source"]``).
        step: the training step the tensors are from.
        val_acc: meta-validation accuracy at that step.
        info: kind-specific facts (adapted: label_names, lang, support, adaptation, source).
        files: name (relative, ``/``-separated) -> size and sha256; filled by the writer.
        root: the directory it was read from (not stored).
        legacy: the old format tag when read through the compatibility path (no digests).
    """

    kind: str
    encoder: dict[str, Any]
    meta: dict[str, Any]
    base_model: str | None = None
    training: dict[str, Any] | None = None
    step: int | None = None
    val_acc: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    xmeta_version: str = ""
    created: str = ""
    format: str = FORMAT
    root: Path | None = field(default=None, compare=False)
    legacy: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"artifact kind must be one of {KINDS}, got {self.kind!r}")
        if not self.xmeta_version:
            from xmeta import __version__

            self.xmeta_version = __version__
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")

    @property
    def params_path(self) -> Path:
        """The xmeta tensors of this artifact."""
        name = LEGACY[_legacy_file(self.legacy)][2] if self.legacy else PARAMS
        return self._root / name

    @property
    def training_data_path(self) -> Path | None:
        return self._root / TRAINING_DATA if TRAINING_DATA in self.files else None

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise ValueError("this manifest was not read from a directory")
        return self.root

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("root"), data.pop("legacy")
        return {"format": data.pop("format"), **data}


def _legacy_file(tag: str | None) -> str:
    return next(name for name, (_, fmt, _) in LEGACY.items() if fmt == tag)


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def describe_files(root: Path) -> dict[str, FileEntry]:
    """Size and digest of every file under ``root`` except the manifest."""
    return {
        p.relative_to(root).as_posix(): FileEntry(file_digest(p), p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    }


def has_manifest(directory: Path) -> bool:
    """Whether ``directory`` holds an artifact of this or an older format."""
    return any((directory / name).is_file() for name in (MANIFEST, *LEGACY))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: cannot read the manifest ({err})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of an artifact directory (``xmeta.json``, or an older format's file).

    Raises:
        ArtifactError: no manifest, invalid JSON, an unknown format version or missing keys.
    """
    root = Path(directory)
    path = root / MANIFEST
    if not path.is_file():
        for name in LEGACY:
            if (root / name).is_file():
                return _read_legacy(root, name)
        raise ArtifactError(f"{root}: not an xmeta artifact (no {MANIFEST})")
    data = _read_json(path)
    fmt = data.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("xmeta/"):
            raise ArtifactError(
                f"{path}: artifact format {fmt!r} is newer than this xmeta reads ({FORMAT!r}); upgrade xmeta"
            )
        raise ArtifactError(f"{path}: not an xmeta artifact (format {fmt!r}, expected {FORMAT!r})")
    try:
        files = {name: FileEntry(**entry) for name, entry in data.pop("files").items()}
        return Manifest(**{k: v for k, v in data.items() if k != "format"}, files=files, root=root)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(f"{path}: invalid manifest ({err})") from None


def _read_legacy(root: Path, name: str) -> Manifest:
    """An artifact of the format before xmeta/2: same facts, no digests."""
    kind, fmt, weights = LEGACY[name]
    data = _read_json(root / name)
    if data.get("format") != fmt:
        raise ArtifactError(f"{root / name}: unknown format {data.get('format')!r} (this xmeta reads {fmt!r})")
    if "encoder" not in data or "meta" not in data:
        raise ArtifactError(f"{root / name}: missing the encoder or meta config")
    if not (root / weights).is_file():
        raise ArtifactError(f"{root}: missing {weights}; re-create it with {_WHAT_MADE[kind]}")
    if root.resolve() not in _legacy_warned:
        _legacy_warned.add(root.resolve())
        logger.warning(
            "%s: written in the old %s format, which has no digests, so its files cannot be verified; "
            "`xmeta artifacts migrate %s` rewrites it",
            root,
            fmt,
            root,
        )
    if kind == "adapted":
        info = {k: v for k, v in data.items() if k not in ("format", "encoder", "meta", "created", "xmeta_version")}
        extra: Mapping[str, Any] = {}
    else:
        extra = data.get("extra") or {}
        info = {k: v for k, v in extra.items() if k not in ("step", "val_acc", "data")}
        info.update({k: v for k, v in data.items() if k not in ("format", "encoder", "meta", "extra")})
    return Manifest(
        kind=kind,
        encoder=data["encoder"],
        meta=data["meta"],
        training=legacy_training(extra.get("data")),
        step=extra.get("step"),
        val_acc=extra.get("val_acc"),
        info=info,
        created=str(data.get("created", "")),
        root=root,
        legacy=fmt,
    )


def legacy_training(data: Any) -> dict[str, Any] | None:
    """Task and ``{lang: splits}`` of an old run's recorded ``DataConfig`` (train split, dev for validation)."""
    if not isinstance(data, Mapping) or not data.get("task") or not data.get("train_langs"):
        return None
    splits: dict[str, list[str]] = {lang: ["train"] for lang in data["train_langs"]}
    for lang in data.get("val_langs") or []:
        splits[lang] = sorted({*splits.get(lang, []), "dev"})
    return {"task": data["task"], "splits_by_lang": splits}


def verify(manifest: Manifest) -> float:
    """Check every file against its size and sha256; returns the seconds it took.

    Raises:
        ArtifactError: a missing, truncated or altered file, named, with what to do.
    """
    start = time.perf_counter()
    root = manifest._root
    fix = f"restore the directory from a copy, or re-create it with {_WHAT_MADE[manifest.kind]}"
    for name, entry in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {root / MANIFEST}); {fix}")
        size = path.stat().st_size
        if size != entry.bytes:
            raise ArtifactError(
                f"{path}: {size} bytes, but {root / MANIFEST} says {entry.bytes}: the file is truncated or was "
                f"changed after it was written; {fix}"
            )
        if file_digest(path) != entry.sha256:
            raise ArtifactError(
                f"{path}: does not match its sha256 in {root / MANIFEST}: the file is corrupt or was changed "
                f"after it was written; {fix}"
            )
    return time.perf_counter() - start
