"""``TrainConfig``: the typed single source of truth of a meta-training run.

YAML files in ``recipes/configs/`` and ``a.b=value`` overrides only override these fields; an
unknown key is an error naming it (``xmeta.config.load_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xmeta.data.languages import (
    EVALUATION_LANGS,
    HIGH_RESOURCE_LANGS,
    VALIDATION_LANGS,
    VALIDATION_WIDE_LANGS,
    expand_languages,
)
from xmeta.meta.config import MetaConfig
from xmeta.models.encoder import EncoderConfig


@dataclass
class DataConfig:
    """Where episodes come from.

    Attributes:
        task: corpus name in ``xmeta.data.TASKS`` (sib200, afrisenti, files).
        data_dir: corpus root; None means ``$XMETA_DATA_DIR``.
        train_langs: meta-training languages (episodes from their train split); an item may name a
            set (``tier:high``, see ``xmeta.data.languages.expand_languages``). Default: the 10
            languages of Joshi classes 4-5 in XLM-R (``train:hr10``).
        val_langs: meta-validation languages (support and query from their dev split); sets as in
            ``train_langs``. Default: 5 low-resource African languages (``val:african5``).
        n_way, k_shot, q_query: episode shape for training and validation.
        n_way_min: vary the number of classes of each training episode uniformly in
            ``n_way_min..n_way`` (task diversity); validation keeps ``n_way``. None = always ``n_way``.
        val_episodes: validation episodes per language, fixed once for the whole run.
        cross_lingual: draw each training episode's queries from another training language
            (same classes, different sentences) -- support/query language mismatch as in transfer.
        aux_task: task diversity: a second corpus (``afrisenti``) whose train-split episodes are mixed
            into meta-training; its episodes have ``min(n_way, its classes)`` ways. None = off.
        aux_langs: the auxiliary corpus' languages; never an evaluation or validation language
            (checked by ISO code, since another corpus' sentences are not covered by the leakage check).
        aux_fraction: the share of auxiliary episodes.
    """

    task: str = "sib200"
    data_dir: str | None = None
    train_langs: tuple[str, ...] = HIGH_RESOURCE_LANGS
    val_langs: tuple[str, ...] = VALIDATION_LANGS
    n_way: int = 7
    n_way_min: int | None = None
    k_shot: int = 5
    q_query: int = 5
    val_episodes: int = 8
    cross_lingual: bool = False
    aux_task: str | None = None
    aux_langs: tuple[str, ...] = ()
    aux_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("train_langs", "val_langs"):  # set names (tier:high) become their codes here
            try:
                setattr(self, name, tuple(expand_languages(getattr(self, name))))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        if not self.train_langs:
            raise ValueError("data.train_langs must name at least one language")
        if overlap := sorted(set(self.train_langs) & set(self.val_langs)):
            raise ValueError(f"data.val_langs overlap data.train_langs: {', '.join(overlap)}")
        if self.n_way < 2 or self.k_shot < 1 or self.q_query < 1:
            raise ValueError(
                f"need n_way >= 2, k_shot >= 1, q_query >= 1; got {self.n_way}/{self.k_shot}/{self.q_query}"
            )
        if self.n_way_min is not None and not 2 <= self.n_way_min <= self.n_way:
            raise ValueError(f"data.n_way_min must be between 2 and n_way={self.n_way}, got {self.n_way_min}")
        if self.val_episodes < 0:
            raise ValueError(f"data.val_episodes must be >= 0, got {self.val_episodes}")
        if self.cross_lingual and len(self.train_langs) < 2:
            raise ValueError("data.cross_lingual needs at least two train_langs")
        self._check_aux()

    def _check_aux(self) -> None:
        if self.aux_task is None:
            if self.aux_langs or self.aux_fraction:
                raise ValueError("aux_langs / aux_fraction need aux_task (e.g. afrisenti)")
            return
        if not self.aux_langs or not 0.0 < self.aux_fraction <= 1.0:
            raise ValueError(
                f"aux_task needs aux_langs and 0 < aux_fraction <= 1, got {list(self.aux_langs)} and {self.aux_fraction}"
            )
        # Another corpus has no source ids shared with SIB-200: keep its languages away from every
        # language the benchmark or the validation scores (by ISO code: AfriSenti's swa is SIB's swh).
        protected = {c.split("_")[0] for c in (*EVALUATION_LANGS, *VALIDATION_WIDE_LANGS, *self.val_langs)} | {"swa"}
        if bad := sorted(c for c in self.aux_langs if c.split("_")[0] in protected):
            raise ValueError(f"aux_langs {bad} are evaluation or validation languages: meta-training must not see them")


@dataclass
class OptimConfig:
    """Outer-loop optimiser (AdamW) and learning-rate schedule."""

    outer_lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.outer_lr <= 0:
            raise ValueError(f"optim.outer_lr must be > 0, got {self.outer_lr}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"optim.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("optim.warmup_steps, weight_decay and grad_clip must be >= 0")


@dataclass
class TrainConfig:
    """A meta-training run.

    Attributes:
        output_dir: where checkpoints, metrics, the resolved config and the final artifact go.
        seed: fixes the episodes (with the rank and step) and every RNG.
        max_steps: outer (meta) steps; each consumes ``meta_batch_size`` episodes in total.
        meta_batch_size: episodes per outer step, summed over processes (must divide evenly).
        val_every: meta-validate every N steps (0 disables; the final artifact is then the last step).
        patience: stop after N validations without improvement (0: never stop early).
        checkpoint_every: write a resumable checkpoint every N steps (and at the end).
        keep_checkpoints: how many resumable checkpoints to keep.
        mixed_precision: "no" or "bf16" (autocast; no loss scaling needed).
        max_nonfinite: stop with an error after this many consecutive non-finite episode losses.
        log_every: metrics to JSONL / trackers every N steps.
        trackers: accelerate trackers to log to ("tensorboard" when installed; [] for none).
        activation_cache: cache the frozen layers' outputs below the lowest adapter (exact, faster).
        activation_cache_dir: where pre-built activation caches live: the run fills the cache over
            every example it can draw once and saves it there, and later runs (a resumption, another
            seed) on the same encoder and data load it instead of refilling (``xmeta.meta.cache_store``).
            None: filled in memory as episodes need it, per run.
    """

    output_dir: str = "runs/meta"
    seed: int = 0
    max_steps: int = 200
    meta_batch_size: int = 4
    val_every: int = 25
    patience: int = 0
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    mixed_precision: Literal["no", "bf16"] = "no"
    max_nonfinite: int = 20
    log_every: int = 1
    trackers: tuple[str, ...] = ("tensorboard",)
    activation_cache: bool = True
    activation_cache_dir: str | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.meta_batch_size < 1:
            raise ValueError(f"max_steps and meta_batch_size must be >= 1, got {self.max_steps}/{self.meta_batch_size}")
        for name in ("val_every", "patience", "checkpoint_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.max_nonfinite < 1:
            raise ValueError(f"max_nonfinite must be >= 1, got {self.max_nonfinite}")
        self.trackers = tuple(self.trackers)
