"""SetFit through the real ``setfit`` library, on the same encoder and episodes as every other method.

SetFit (Tunstall et al., 2022) fine-tunes a sentence-transformers body contrastively on pairs
drawn from the support set, then fits a logistic-regression head on the tuned embeddings. The
body is built offline from the encoder's directory (zoo name, hub id or path) the way
multilingual-e5 is published as a sentence-transformers model: the transformer, mean pooling, L2
normalisation; texts get the encoder's ``"query: "`` prefix, and the body truncates at the
encoder's ``max_length`` (128) like the other methods.

Hyperparameters are SetFit 1.2's defaults (``setfit.TrainingArguments``): batch size 16, one
epoch of ``oversampling`` pairs (every unique pair, the minority of positives repeated; 1,050
pairs for 7-way 5-shot), body learning rate 2e-5 with 10% warm-up, ``CosineSimilarityLoss``,
a scikit-learn ``LogisticRegression`` head. Only the seed differs: it is the episode's, like
every method's. Each episode starts from a fresh copy of the pretrained body.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xmeta.interfaces import Example, label_names_of
from xmeta.peers.logreg import ProbaPredictor

logger = logging.getLogger(__name__)


@dataclass
class SetFitConfig:
    """Options of the SetFit peer (``None`` keeps SetFit's own default).

    Attributes:
        text_prefix: Prepended to every text (e5's ``"query: "``; ``""`` for other encoders).
        max_length: Body truncation in tokens.
        normalize: End the body with L2 normalisation (as e5's published sentence-transformers model).
        batch_size: Pairs per contrastive step (SetFit: 16).
        num_epochs: Contrastive epochs (SetFit: 1).
        num_iterations: Pairs per example (SetFit's older sampling); ``None`` = ``oversampling``.
        body_learning_rate: Learning rate of the body (SetFit: 2e-5).
        max_steps: Cap on contrastive steps; ``-1`` = none (SetFit's default).
        device: Torch device of the body (``None``: sentence-transformers' choice).
    """

    text_prefix: str = "query: "
    max_length: int = 128
    normalize: bool = True
    batch_size: int = 16
    num_epochs: int = 1
    num_iterations: int | None = None
    body_learning_rate: float = 2e-5
    max_steps: int = -1
    device: str | None = None

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.batch_size < 1 or self.num_epochs < 1:
            raise ValueError(f"batch_size and num_epochs must be >= 1, got {self.batch_size}, {self.num_epochs}")
        if self.num_iterations is not None and self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1 or None, got {self.num_iterations}")
        if self.body_learning_rate <= 0:
            raise ValueError(f"body_learning_rate must be > 0, got {self.body_learning_rate}")


def _setfit():  # -> the setfit module
    try:
        import setfit
    except ImportError as err:
        raise ImportError("the setfit method needs the setfit library: pip install 'xmeta[peers]'") from err
    return setfit


def sentence_transformer(model: str, cfg: SetFitConfig) -> Any:
    """A sentence-transformers model of the encoder ``model`` (zoo name, hub id or directory), built offline.

    Returns:
        ``SentenceTransformer([Transformer, Pooling(mean), Normalize?])``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from xmeta.models.encoder import resolve_encoder_path

    path = str(resolve_encoder_path(model))
    try:  # BERT-family encoders (e5): no NSP pooler, whose weights the checkpoint does not hold
        body = Transformer(path, max_seq_length=cfg.max_length, model_kwargs={"add_pooling_layer": False})
    except TypeError:  # architectures without that option
        body = Transformer(path, max_seq_length=cfg.max_length)
    modules = [body, Pooling(body.get_embedding_dimension(), pooling_mode="mean")]
    if cfg.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device=cfg.device)


class SetFitPredictor(ProbaPredictor):
    """Predicts with one episode's SetFit model; ``label_names[i]`` is class ``i``."""

    source = "SetFit"

    def __init__(self, model: Any, label_names: tuple[str, ...], text_prefix: str) -> None:
        self.model = model
        self.label_names = label_names
        self.text_prefix = text_prefix

    def proba(self, texts: Sequence[str]) -> tuple[Any, Any]:
        proba = self.model.predict_proba([self.text_prefix + t for t in texts], as_numpy=True)
        return proba, self.model.model_head.classes_


class SetFitLearner:
    """SetFit on the support set: ``adapt`` trains a fresh copy of the body and a head.

    Args:
        model: Encoder zoo name, hub id or directory.
        cfg: Options (SetFit's defaults otherwise).
    """

    def __init__(self, model: str = "multilingual-e5-small", cfg: SetFitConfig | None = None) -> None:
        self.cfg = cfg or SetFitConfig()
        self.model_name = model
        self._body: Any = None

    def load(self) -> Any:
        """The pretrained body, loaded once (each episode trains a copy)."""
        if self._body is None:
            _setfit()
            self._body = sentence_transformer(self.model_name, self.cfg)
        return self._body

    def training_arguments(self, seed: int, output_dir: str) -> Any:
        """SetFit's ``TrainingArguments``: its defaults, the episode's seed, nothing logged or saved."""
        setfit = _setfit()
        extra = {} if self.cfg.num_iterations is None else {"num_iterations": self.cfg.num_iterations}
        return setfit.TrainingArguments(
            output_dir=output_dir,
            batch_size=self.cfg.batch_size,
            num_epochs=self.cfg.num_epochs,
            body_learning_rate=self.cfg.body_learning_rate,
            max_steps=self.cfg.max_steps,
            seed=seed,
            show_progress_bar=False,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            **extra,
        )

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> SetFitPredictor:
        """Contrastive fine-tuning + logistic-regression head on ``support`` (label ids 0..N-1)."""
        from datasets import Dataset

        setfit = _setfit()
        label_names = label_names_of(support)
        body = copy.deepcopy(self.load())
        model = setfit.SetFitModel(model_body=body, model_head=_head(seed))
        data = Dataset.from_dict(
            {"text": [self.cfg.text_prefix + e.text for e in support], "label": [e.label for e in support]}
        )
        with tempfile.TemporaryDirectory(prefix="xmeta-setfit-") as tmp:
            trainer = setfit.Trainer(model=model, args=self.training_arguments(seed, tmp), train_dataset=data)
            trainer.train()
        return SetFitPredictor(model, label_names, self.cfg.text_prefix)


def _head(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(random_state=seed)  # SetFitModel's default head, seeded per episode
