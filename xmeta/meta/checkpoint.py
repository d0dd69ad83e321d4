"""Meta-trained models as xmeta artifacts (kind "meta"), with a peft export that plain peft loads.

``save_meta_model`` writes ``params.safetensors`` (adapters, head, learned inner learning rates and
temperature; the frozen backbone is not copied), ``training_data.json`` (when given), ``adapter/``
and a model card through the one atomic writer of :mod:`xmeta.artifacts`; ``load_meta_model``
resolves any name a user gives (``default``, a run, ``final/``, ``best/``, a checkpoint), verifies
every file's digest, and refuses non-finite tensors. The backbone is re-resolved from
``EncoderConfig.model`` through the model zoo.

``adapter/`` is peft's own ``save_pretrained`` output for the backbone's module names (so
``PeftModel.from_pretrained(AutoModel.from_pretrained(<hub id>), "<dir>/adapter")`` loads every
LoRA tensor), with ``base_model_name_or_path`` set to the Hub id, plus ``head.safetensors``: the
projection and logit scale (and, for an adapted classifier, its prototypes or linear head).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from xmeta.artifacts import (
    ADAPTER_DIR,
    CARD,
    FORMAT,
    PARAMS,
    TRAINING_DATA,
    ArtifactError,
    Manifest,
    TrainingData,
    base_model_of,
    front_matter,
    open_artifact,
    write_artifact,
)
from xmeta.artifacts.card import TASK_DATASETS
from xmeta.artifacts.store import Writer
from xmeta.config import ConfigError, from_dict, to_dict
from xmeta.meta.config import MetaConfig
from xmeta.meta.model import MetaModel
from xmeta.models.encoder import Encoder, EncoderConfig

logger = logging.getLogger(__name__)

BACKBONE = "encoder.backbone."  # prefix of the backbone's tensors among the meta-parameters
HEAD_FILE = "head.safetensors"


def configs_of(manifest: Manifest) -> tuple[EncoderConfig, MetaConfig]:
    """The typed encoder and meta configs of an artifact.

    Raises:
        ArtifactError: a stored config this xmeta cannot build.
    """
    if not manifest.encoder or not manifest.meta:
        raise ArtifactError(f"{manifest.root}: records no encoder or meta config, so it cannot be loaded as a model")
    try:
        return (
            from_dict(EncoderConfig, manifest.encoder, prefix="encoder."),
            from_dict(MetaConfig, manifest.meta, prefix="meta."),
        )
    except (ConfigError, TypeError) as err:
        raise ArtifactError(f"{manifest.root}: {err}") from None


def load_params(manifest: Manifest, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """An artifact's xmeta tensors; a non-finite value is an error (never silently used).

    Raises:
        ArtifactError: an unreadable file or a tensor holding NaN/inf.
    """
    from safetensors import SafetensorError

    path = manifest.params_path
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot read the tensors ({err})") from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(
            f"{path}: non-finite values in {', '.join(bad[:3])}: the file is corrupt, or training diverged; "
            "restore it from a copy or re-create it"
        )
    return tensors


def peft_writer(tensors: Mapping[str, torch.Tensor], encoder: Encoder, base_model: str | None,
                head: Mapping[str, torch.Tensor], head_meta: Mapping[str, str]) -> Writer:  # fmt: skip
    """A writer of ``adapter/``: peft's ``save_pretrained`` of the LoRA tensors, and the head beside it."""

    def write(out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        lora = {k[len(BACKBONE) :]: v for k, v in tensors.items() if k.startswith(BACKBONE) and ".lora_" in k}
        if lora:
            _save_peft(lora, encoder, base_model, out)
        clean = {k: v.detach().cpu().contiguous() for k, v in head.items()}
        save_file(clean, str(out / HEAD_FILE), metadata={"format": FORMAT, **head_meta})

    return write


def _save_peft(lora: Mapping[str, torch.Tensor], encoder: Encoder, base_model: str | None, out: Path) -> None:
    from peft import get_peft_model
    from transformers import AutoModel

    config = encoder.lora_config(task_type="FEATURE_EXTRACTION", base_model_name_or_path=base_model)
    with torch.device("meta"):  # the structure only: no weights are allocated or initialised
        base = AutoModel.from_config(encoder.backbone.config)
    model = get_peft_model(base, config)
    if base_model:  # get_peft_model records the local directory the structure came from: use the Hub id
        model.peft_config["default"].base_model_name_or_path = base_model
    state = {"base_model.model." + k: v.detach().cpu().contiguous() for k, v in lora.items()}
    own = {n for n, _ in model.named_parameters() if ".lora_" in n}
    if set(state) != own:
        raise RuntimeError(f"peft export: LoRA names differ (e.g. {sorted(set(state) ^ own)[:2]})")
    model.load_state_dict(state, strict=False, assign=True)
    model.save_pretrained(str(out), save_embedding_layers=False)  # LoRA only: no Hub lookup of the base
    (out / "README.md").unlink(missing_ok=True)  # peft's empty template; the artifact's card is one level up


def head_tensors(model: MetaModel, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head's tensors under plain names (``projection.weight``, ``projection.bias``, ``log_scale``)."""
    out = {k[len("head.") :]: v for k, v in params.items() if k.startswith("head.")}
    out.setdefault("log_scale", model.head.log_scale.detach())
    return out


def training_languages(training: TrainingData | None) -> list[str]:
    return list(training.splits_by_lang) if training else []


def save_meta_model(
    model: MetaModel,
    directory: str | Path,
    *,
    kind: str = "meta",
    training: TrainingData | None = None,
    step: int | None = None,
    val_acc: float | None = None,
    info: dict[str, Any] | None = None,
    card: str | None = None,
    extra_files: Mapping[str, Writer] | None = None,
) -> Path:
    """Write ``model``'s meta-parameters as an artifact at ``directory`` (atomically).

    Args:
        model: the meta-model.
        directory: where to write (an existing artifact there is replaced).
        kind: "meta", or "checkpoint" for a resumable training state (``extra_files`` holds the rest).
        training: the data meta-training and validation read (the benchmark's leakage check).
        step: training step; val_acc: meta-validation accuracy at that step.
        info: more JSON-able facts for the manifest.
        card: the model card's body (front matter is added); a short default otherwise.
        extra_files: more files to write (name -> writer).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.meta_state_dict().items()}
    base, _ = base_model_of(model.encoder.cfg.model)
    manifest = Manifest(
        kind,
        to_dict(model.encoder.cfg),
        to_dict(model.cfg),
        base_model=base,
        training=training.summary() if training else None,
        step=step,
        val_acc=val_acc,
        info=dict(info or {}),
    )
    writers: dict[str, Writer] = {PARAMS: lambda p: save_file(tensors, str(p), metadata={"format": FORMAT})}
    if training is not None and training.has_ids:
        writers[TRAINING_DATA] = lambda p: p.write_text(training.to_text(), encoding="utf-8")
    if kind == "meta":
        head_meta = {"text_prefix": model.encoder.cfg.text_prefix, "pooling": model.encoder.cfg.pooling}
        writers[ADAPTER_DIR] = peft_writer(tensors, model.encoder, base, head_tensors(model, tensors), head_meta)
        langs = training_languages(training)
        datasets = [TASK_DATASETS[training.task]] if training and training.task in TASK_DATASETS else []
        text = front_matter(manifest, langs, datasets, "feature-extraction") + (card or default_card(manifest))
        writers[CARD] = lambda p: p.write_text(text, encoding="utf-8")
    writers.update(extra_files or {})
    return write_artifact(directory, manifest, writers)


def default_card(manifest: Manifest) -> str:
    """A short model card for a meta-trained model saved outside the recipe."""
    val = f"{manifest.val_acc:.4f}" if manifest.val_acc is not None else "not recorded"
    return f"""# xmeta meta-trained encoder

- encoder: `{manifest.encoder.get("model")}` (base model `{manifest.base_model}`)
- algorithm: `{manifest.meta.get("algorithm")}`; step {manifest.step}; meta-validation accuracy {val}

{usage(manifest)}"""


def usage(manifest: Manifest, classifier: bool = False) -> str:
    """The card's "Use" section: xmeta commands, and the same model with plain transformers + peft + torch."""
    enc, distance = manifest.encoder, manifest.meta.get("distance", "cosine")
    base = manifest.base_model or base_model_of(str(enc.get("model")))[0] or enc.get("model")
    score = (
        "head['log_scale'].exp() * F.normalize(z, dim=-1) @ F.normalize(protos, dim=-1).T"
        if distance == "cosine"
        else "-head['log_scale'].exp() * torch.cdist(z, protos) ** 2"
    )
    if classifier:
        xmeta_use = "`xmeta predict --model <this dir> --input texts.txt` (JSON lines), or `xmeta serve <this dir>`."
        feats = "F.normalize(z, dim=-1)" if distance == "cosine" else "z"
        classify = f"""# The adapted classifier: its prototypes, or its linear head, and its label names.
names = json.loads(safe_open("<this dir>/adapter/{HEAD_FILE}", "pt").metadata()["label_names"])
z = embed(["a new text"])
if "prototypes" in head:
    protos = head["prototypes"]
    logits = {score}
else:
    logits = {feats} @ head["linear.weight"].T + head["linear.bias"]
print(names[int(logits.argmax())], logits.softmax(-1))"""
    else:
        xmeta_use = (
            "`xmeta adapt --model <this dir> --support examples.tsv --out my-classifier`, "
            "or `xmeta bench --methods meta:<this dir>`."
        )
        classify = f"""# Few-shot classification: a prototype is the mean support embedding of a class.
support = {{"sports": ["...", "..."], "politics": ["...", "..."]}}
protos = torch.stack([embed(texts).mean(0) for texts in support.values()])
z = embed(["a new text"])
probs = ({score}).softmax(-1)"""
    pool = (
        "z = h[:, 0]"
        if enc.get("pooling") == "cls"
        else 'mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)\n    z = (h * mask).sum(1) / mask.sum(1)'
    )
    norm = "\n    z = F.normalize(z, dim=-1)" if enc.get("normalize") else ""
    return f"""## Use

With xmeta: {xmeta_use}

With plain transformers + peft + torch (`adapter/` is peft's own format; the head is beside it):

```python
import json, torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

base = "{base}"  # or a local copy of it
tok = AutoTokenizer.from_pretrained(base)
model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), "<this dir>/adapter").eval()
head = load_file("<this dir>/adapter/{HEAD_FILE}")

def embed(texts):  # xmeta's sentence embedding, then the meta-learned projection
    batch = tok([{enc.get("text_prefix", "")!r} + t for t in texts], padding=True, truncation=True,
                max_length={enc.get("max_length")}, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    {pool}{norm}
    if "projection.weight" in head:
        z = z @ head["projection.weight"].T + head["projection.bias"]
    return z

{classify}
```
"""


def load_meta_model(source: str | Path | Manifest, *, encoder: Encoder | None = None) -> MetaModel:
    """Rebuild a ``MetaModel`` from a verified artifact.

    Args:
        source: a name ``xmeta.artifacts.resolve`` understands (``default``, a run, ``final/``,
            ``best/``, a checkpoint), or an already opened manifest.
        encoder: an already built encoder to use (it must have the same adapter layout); by
            default one is built from the stored ``EncoderConfig`` (model via the zoo).

    Raises:
        ArtifactError: a missing, corrupt or non-finite artifact, or tensors that do not fit the model.
    """
    manifest = source if isinstance(source, Manifest) else open_artifact(source, "meta")
    enc_cfg, meta_cfg = configs_of(manifest)
    if encoder is None:
        encoder = Encoder.from_config(enc_cfg)
    model = MetaModel(encoder, meta_cfg)
    state = load_params(manifest, encoder.device)
    try:
        model.load_meta_state_dict(state)
    except ValueError as err:
        raise ArtifactError(f"{manifest.params_path}: {err}") from None
    return model
