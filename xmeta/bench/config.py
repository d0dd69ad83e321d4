"""``BenchConfig``: the typed settings of one benchmark run (YAML and ``key=value`` override these).

Validation happens in ``__post_init__`` so that a bad value (a typo in a method name, ``n_way=1``,
a language listed twice) is refused before any model is loaded or any episode is run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from xmeta.bench.methods import parse_method, parse_method_options
from xmeta.data.languages import expand_languages
from xmeta.registry import UnknownNameError

_SPLITS = ("train", "dev", "test")
_LANG = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class BenchConfig:
    """One benchmark: methods x languages x K on identical N-way K-shot episodes.

    Attributes:
        task: Corpus name in ``xmeta.data`` (``sib200``, ``afrisenti``, ``files``).
        langs: Evaluation languages (FLORES-style codes for SIB-200); an item may name a set
            (``eval:lowres25``, ``tier:low``; ``xmeta.data.languages.expand_languages``).
        methods: Method specs of registered kinds (``xmeta bench --help`` lists them), e.g.
            ``frozen-proto``, ``logreg``, ``setfit``, ``meta:default``, ``icl:<llm>``,
            ``icl:openai:<model>``, ``external:<predictions file>``.
        n_way: Classes per episode.
        k_shot: Support examples per class; several values give one benchmark per K.
        q_query: Query examples per class.
        episodes_per_lang: Episodes per language (and per K); the CLI flag is ``--episodes``.
        seed: Fixes the episodes (with task, lang, N, K, Q and the episode index) and the bootstrap.
        support_split: Split the support sets come from.
        query_split: Split the queries come from.
        on_small_class: A class with too few examples for K + Q: ``error``, ``skip`` it, or
            ``shrink`` its shots (see ``xmeta.data.episodes.EpisodeSampler``).
        data_dir: Directory holding the corpora (default: ``$XMETA_DATA_DIR``).
        data_options: Extra keyword arguments for the task loader (e.g. ``files`` for ``files``).
        encoder: Encoder (zoo name or path) of ``frozen-proto`` and ``finetune``.
        method_options: Per registered method kind (``xmeta bench --help`` lists them), the options
            its schema declares, e.g. ``{icl: {batch_size: 8}}``; an unknown kind or option is refused.
        out: Output directory (results, report, plots, per-cell checkpoints).
        bootstrap: Bootstrap resamples for the 95% intervals.
        ci: Confidence level of the intervals.
        retry_failed: On resumption, run again the cells that failed before (finished ones never are).
        missing_predictions: A query a method left without a prediction (no line in a predictions
            file, an LLM answer naming no label) is ``wrong`` (the default: it counts against the
            method) or ``exclude`` (scores over the answered queries only, labelled so in the
            report). Coverage is reported either way. Use a fresh ``out`` when changing it.
        rss_interval_s: Sampling period of the peak-RSS monitor.
        published: Show the published SIB-200 numbers (other protocols) beside our table.
        plots: Write the PNG plots.
    """

    task: str = "sib200"
    langs: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["frozen-proto"])
    n_way: int = 7
    k_shot: int | list[int] = field(default_factory=lambda: [5])
    q_query: int = 5
    episodes_per_lang: int = 20
    seed: int = 0
    support_split: str = "dev"
    query_split: str = "test"
    on_small_class: str = "error"
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    encoder: str = "multilingual-e5-small"
    method_options: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/bench"
    bootstrap: int = 2000
    ci: float = 0.95
    retry_failed: bool = True
    missing_predictions: str = "wrong"
    rss_interval_s: float = 0.05
    published: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.k_shot, int):  # a YAML scalar `k_shot: 5` means one K
            self.k_shot = [self.k_shot]
        try:  # set names (eval:lowres25) become their codes before any check
            self.langs = expand_languages(self.langs)
        except ValueError as err:
            raise ValueError(f"langs: {err}") from None
        self.methods = list(self.methods)
        self.k_shot = list(self.k_shot)
        self._check_names()
        self._check_numbers()
        if self.support_split not in _SPLITS or self.query_split not in _SPLITS:
            raise ValueError(
                f"support_split/query_split must be in {_SPLITS}, got {self.support_split!r}/{self.query_split!r}"
            )
        if self.on_small_class not in ("error", "skip", "shrink"):
            raise ValueError(f"on_small_class must be error, skip or shrink, got {self.on_small_class!r}")
        if self.missing_predictions not in ("wrong", "exclude"):
            raise ValueError(f"missing_predictions must be 'wrong' or 'exclude', got {self.missing_predictions!r}")
        parse_method_options(self.method_options)  # each kind's own schema: a misspelt option is refused here

    def _check_names(self) -> None:
        if not self.task:
            raise ValueError("task must be set")
        if not self.langs:
            raise ValueError("langs must list at least one language")
        for lang in self.langs:
            if not _LANG.match(lang):
                raise ValueError(f"langs: {lang!r} is not a language code (e.g. swh_Latn)")
        if len(set(self.langs)) != len(self.langs):
            raise ValueError(f"langs lists a language twice: {self.langs}")
        if not self.methods:
            raise ValueError("methods must list at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        for spec in self.methods:
            try:
                parse_method(spec)
            except (UnknownNameError, ValueError) as err:
                raise ValueError(f"methods: {err}") from None

    def _check_numbers(self) -> None:
        if self.n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {self.n_way}")
        if not self.k_shot or any(k < 1 for k in self.k_shot):
            raise ValueError(f"k_shot must be one or more integers >= 1, got {self.k_shot}")
        if len(set(self.k_shot)) != len(self.k_shot):
            raise ValueError(f"k_shot lists a value twice: {self.k_shot}")
        if self.q_query < 1:
            raise ValueError(f"q_query must be >= 1, got {self.q_query}")
        if self.episodes_per_lang < 1:
            raise ValueError(f"episodes_per_lang must be >= 1, got {self.episodes_per_lang}")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap must be >= 100 resamples, got {self.bootstrap}")
        if not 0.5 <= self.ci < 1:
            raise ValueError(f"ci must be in [0.5, 1), got {self.ci}")
        if self.rss_interval_s <= 0:
            raise ValueError(f"rss_interval_s must be > 0, got {self.rss_interval_s}")

    def options_for(self, kind: str) -> dict[str, Any]:
        """The learner keyword arguments configured for a method kind (a copy)."""
        return dict(self.method_options.get(kind, {}))
