"""A logistic-regression probe on frozen sentence embeddings: the protocol of MTEB's classification tasks.

MTEB (``AbsTaskClassification``) embeds the texts with the frozen model, fits scikit-learn's
``LogisticRegression(max_iter=100)`` on the embeddings of a few labelled examples per class and
scores the test set. ``LogRegLearner`` does exactly that on an episode's support set, so it runs on
the benchmark's episodes like every other method; :func:`mteb_protocol` runs MTEB's own sampling
(8 examples per label from ``train``, 10 experiments, the full ``test`` set) to reproduce the
published number (``eval/mteb_sib200.py``).

The embeddings follow multilingual-e5's sentence-transformers pipeline, which MTEB evaluates:
``"query: "`` prefix, mean pooling, L2 normalisation (``normalize``; logistic regression is not
scale-invariant, so this matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmeta.errors import XmetaError
from xmeta.interfaces import Example, Prediction, label_names_of
from xmeta.models.encoder import Encoder, EncoderConfig
from xmeta.peers.embeddings import FrozenEmbedder


@dataclass
class LogRegConfig:
    """Options of the probe (MTEB's values by default).

    Attributes:
        C: Inverse L2 regularisation strength (scikit-learn's default, which MTEB keeps).
        max_iter: L-BFGS iterations (MTEB: 100).
        normalize: L2-normalise the embeddings (as e5's sentence-transformers model does).
        batch_size: Texts per encoder forward pass.
    """

    C: float = 1.0
    max_iter: int = 100
    normalize: bool = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _sklearn_logreg(cfg: LogRegConfig, seed: int):  # -> sklearn.linear_model.LogisticRegression
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:  # pragma: no cover - the peers extra is installed by the tests
        raise ImportError("the logreg method needs scikit-learn: pip install 'xmeta[peers]'") from err
    return LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)


def scikit_prediction(proba: np.ndarray, classes: np.ndarray, label_names: tuple[str, ...], source: str) -> Prediction:
    """A :class:`Prediction` from a scikit-learn style ``predict_proba`` whose columns are ``classes`` (label ids).

    Raises:
        XmetaError: Non-finite probabilities (diverged training or corrupt weights), never passed on.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if not np.isfinite(proba).all():
        raise XmetaError(f"{source} produced non-finite class probabilities (diverged training or corrupt weights)")
    probs = np.zeros((len(proba), len(label_names)))
    probs[:, np.asarray(classes).astype(int)] = proba  # classes are the support's label ids, sorted
    return Prediction(probs.argmax(axis=1).astype(np.int64), probs, label_names)


def empty_prediction(label_names: tuple[str, ...]) -> Prediction:
    """The prediction for no texts."""
    return Prediction(np.zeros(0, dtype=np.int64), np.zeros((0, len(label_names))), label_names)


class ProbaPredictor:
    """A predictor over a scikit-learn style classifier: subclasses give ``proba(texts)`` and ``classes``."""

    label_names: tuple[str, ...]
    source: str = "the classifier"

    def proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(predict_proba rows, their class ids)`` for non-empty ``texts``."""
        raise NotImplementedError

    def predict(self, texts: Sequence[str]) -> Prediction:
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return empty_prediction(self.label_names)
        return scikit_prediction(*self.proba(texts), self.label_names, self.source)


class LogRegPredictor(ProbaPredictor):
    """Class probabilities from a fitted probe; ``label_names[i]`` is class ``i``."""

    source = "the logistic-regression probe"

    def __init__(self, embed: FrozenEmbedder, clf, label_names: tuple[str, ...]) -> None:
        self.embed = embed
        self.clf = clf
        self.label_names = label_names

    def proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.clf.predict_proba(self.embed(texts)), self.clf.classes_


class LogRegLearner:
    """Logistic regression on the frozen encoder's embeddings of the support set.

    Args:
        encoder: A frozen encoder (adapters, if any, are left as they are).
        cfg: Probe options.
    """

    def __init__(self, encoder: Encoder, cfg: LogRegConfig | None = None) -> None:
        self.cfg = cfg or LogRegConfig()
        self.embed = FrozenEmbedder(encoder, batch_size=self.cfg.batch_size)

    @classmethod
    def from_config(cls, encoder: EncoderConfig, cfg: LogRegConfig | None = None) -> LogRegLearner:
        """Load the encoder without adapters, normalising embeddings as ``cfg.normalize`` says."""
        import dataclasses

        cfg = cfg or LogRegConfig()
        return cls(Encoder.from_config(dataclasses.replace(encoder, lora_r=0, normalize=cfg.normalize)), cfg)

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> LogRegPredictor:
        """Fit the probe on ``support`` (label ids 0..N-1)."""
        label_names = label_names_of(support)
        clf = _sklearn_logreg(self.cfg, seed)
        clf.fit(self.embed([e.text for e in support]), np.array([e.label for e in support]))
        return LogRegPredictor(self.embed, clf, label_names)


def undersample(labels: Sequence[int], per_label: int, idxs: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """MTEB's ``_undersample_data``: shuffle ``idxs`` in place, keep the first ``per_label`` of each label.

    The shuffled order carries over to the next experiment, as in MTEB.
    """
    rng.shuffle(idxs)
    taken: dict[int, int] = {}
    keep = []
    for i in idxs:
        label = int(labels[i])
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            keep.append(int(i))
    return np.array(keep)


def mteb_protocol(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    samples_per_label: int = 8,
    n_experiments: int = 10,
    seed: int = 42,
    cfg: LogRegConfig | None = None,
) -> dict[str, float | list[float]]:
    """MTEB's few-shot classification evaluation on precomputed embeddings.

    Args:
        train: ``(embeddings, labels)`` of the training split (the pool the examples are drawn from).
        test: ``(embeddings, labels)`` of the whole test split.
        samples_per_label: Examples per label per experiment (MTEB's SIB200Classification: 8).
        n_experiments: Independent draws (MTEB: 10); the score is their mean.
        seed: Seed of the draws and of the classifier (MTEB: 42).
        cfg: Probe options.

    Returns:
        ``{"accuracy": mean, "accuracy_per_experiment": [...], "macro_f1": mean}``.
    """
    cfg = cfg or LogRegConfig()
    (x_train, y_train), (x_test, y_test) = train, test
    rng = np.random.RandomState(seed)
    idxs = np.arange(len(y_train))
    accs, f1s = [], []
    classes = np.unique(y_train)
    for _ in range(n_experiments):
        keep = undersample(y_train, samples_per_label, idxs, rng)
        clf = _sklearn_logreg(cfg, seed).fit(x_train[keep], y_train[keep])
        pred = clf.predict(x_test)
        accs.append(float(np.mean(pred == y_test)))
        f1 = []
        for c in classes:
            tp, fp, fn = (
                np.sum((pred == c) & (y_test == c)),
                np.sum((pred == c) & (y_test != c)),
                np.sum((pred != c) & (y_test == c)),
            )
            f1.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0)
        f1s.append(float(np.mean(f1)))
    return {"accuracy": float(np.mean(accs)), "accuracy_per_experiment": accs, "macro_f1": float(np.mean(f1s))}
