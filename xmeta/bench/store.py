"""Per-cell checkpoints that make a benchmark resumable: one JSON file per method x K x language.

A cell is written atomically (temporary file + ``os.replace``) as soon as it finishes, so a run
killed at any moment keeps every finished cell and never leaves a half-written one. A stored cell
is reused only if it ran on exactly the same episodes (same fingerprint of all their uids and of
the episode parameters); anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xmeta.errors import writing
from xmeta.interfaces import Episode


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a partial one.

    Raises:
        WriteError: The disk is full or the write was refused (nothing is left behind).
    """
    with writing(path, atomic=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def episodes_fingerprint(episodes: Sequence[Episode], params: dict[str, Any]) -> str:
    """A hash of the episode parameters and every support/query uid, in order, with labels."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for ep in episodes:
        h.update(f"|{ep.index}|{ep.lang}|{ep.query_lang}|{','.join(ep.label_names)}".encode())
        for part in (ep.support, ep.query):
            h.update(("#" + ",".join(f"{e.uid}={e.label}" for e in part)).encode())
    return h.hexdigest()[:24]


def method_slug(name: str) -> str:
    """A file-system-safe, collision-free folder name for a method spec (paths in specs included)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "method"
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@dataclass
class EpisodeResult:
    """One method on one episode.

    Attributes:
        index: Episode index.
        accuracy: Over the scored queries (None when no query could be scored).
        macro_f1: Macro-F1 over the episode's N classes (None like accuracy).
        n_scored: Queries scored (external predictions may cover fewer than all).
        n_queries: Queries in the episode.
        adapt_s: Seconds in ``adapt``.
        predict_s: Seconds in ``predict``.
        pred: Predicted episode label ids (-1 where there is no prediction).
        n_answered: Queries that got a prediction (None in cells stored before coverage was kept: all).
        usage: Requests and tokens sent to a server-backed LLM (``prompt_tokens``, ``completion_tokens``,
            ``requests``, ``cached``), None for local methods.
    """

    index: int
    accuracy: float | None
    macro_f1: float | None
    n_scored: int
    n_queries: int
    adapt_s: float
    predict_s: float
    pred: list[int] = field(default_factory=list)
    n_answered: int | None = None
    usage: dict[str, int] | None = None


@dataclass
class Cell:
    """One method x K x language: its episodes' results, or the error that stopped it."""

    method: str
    k_shot: int
    lang: str
    fingerprint: str
    status: str  # "ok" or "failed"
    episodes: list[EpisodeResult] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    load_s: float | None = None  # the method's model load time in the process that ran this cell

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        data = dict(data)
        data["episodes"] = [EpisodeResult(**e) for e in data.get("episodes", [])]
        return cls(**data)


class CellStore:
    """Cells under ``root/k<K>/<method slug>/<lang>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, method: str, k_shot: int, lang: str) -> Path:
        return self.root / f"k{k_shot}" / method_slug(method) / f"{lang}.json"

    def load(self, method: str, k_shot: int, lang: str) -> Cell | None:
        """The stored cell, or None when absent or unreadable (it is then simply recomputed)."""
        path = self.path(method, k_shot, lang)
        try:
            return Cell.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def reusable(self, method: str, k_shot: int, lang: str, fingerprint: str, retry_failed: bool) -> Cell | None:
        """The stored cell if it was computed on these episodes (and, if failed, is not retried)."""
        cell = self.load(method, k_shot, lang)
        if cell is None or cell.fingerprint != fingerprint:
            return None
        if cell.status != "ok" and retry_failed:
            return None
        return cell

    def save(self, cell: Cell) -> Path:
        path = self.path(cell.method, cell.k_shot, cell.lang)
        atomic_write_json(path, cell.to_json())
        return path
