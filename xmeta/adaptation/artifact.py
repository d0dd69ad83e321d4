"""The adapted classifier as an xmeta artifact (kind "adapted"): ``xmeta adapt --out DIR``.

Layout (see ``xmeta.artifacts.manifest``)::

    DIR/
      xmeta.json            manifest: label names, language, encoder and meta configs, adaptation
                            settings, support statistics, source model, per-file sha256
      params.safetensors    the adapted tensors: LoRA adapters, head tensors (projection,
                            temperature), the episode head (linear heads) or ``prototypes``
      adapter/              peft's own LoRA export + ``head.safetensors`` (prototypes or linear head,
                            label names in its metadata): the classifier in plain transformers + peft
      README.md             model card (Hub front matter, support statistics, usage)

The frozen backbone is re-resolved from the encoder config. Directories of the previous format
(``xmeta_adapted.json`` + ``adapted.safetensors``) still load (``xmeta.artifacts`` compatibility path).
"""

from __future__ import annotations

from typing import Any

from xmeta.artifacts import FORMAT, ArtifactError, Manifest

PROTOTYPES = "prototypes"


def check_metadata(manifest: Manifest) -> tuple[str, ...]:
    """The label names of an adapted artifact, checked.

    Raises:
        ArtifactError: missing or invalid label names.
    """
    names = manifest.info.get("label_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"{manifest.root}: label_names must be a list of at least 2 strings, got {names!r:.80}")
    return tuple(names)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def model_card(metadata: dict[str, Any]) -> str:
    """The README.md of an adapted model, from its metadata."""
    sup, src, ad, enc = metadata["support"], metadata["source"], metadata["adaptation"], metadata["encoder"]
    lang = metadata.get("lang", "und")
    lang_name = metadata.get("lang_name")
    per_class = "\n".join(f"  - {name}: {n}" for name, n in sup["per_class"].items())
    dropped = [
        f"{sup['dropped_empty']} empty text(s)" if sup.get("dropped_empty") else "",
        f"{sup['dropped_duplicates']} duplicate row(s)" if sup.get("dropped_duplicates") else "",
        (
            f"{sum(sup['subsampled'].values())} over the {sup['max_per_class']}-per-class cap "
            f"(seeded subsample, seed {sup['seed']})"
        )
        if sup.get("subsampled")
        else "",
    ]
    dropped_text = "; ".join(d for d in dropped if d) or "none"
    chars, tokens = sup["chars"], sup.get("tokens", {})
    steps = ad.get("inner_steps", 0)
    how = (
        f"{steps} first-order inner step(s) of `{ad['algorithm']}` on {ad['inner_params']!r} (inner lr {ad['inner_lr']})"
        if steps
        else "class prototypes (no gradient step)"
    )
    trained = ", ".join(f"{k} {_fmt(src[k])}" for k in ("step", "val_acc") if k in src)
    token_line = (
        f"- text length (tokens): mean {_fmt(tokens['mean'])}, max {tokens['max']}; "
        f"{tokens['truncated']} truncated at {enc['max_length']}\n"
        if tokens
        else ""
    )
    return f"""# xmeta adapted classifier: {lang}{f" ({lang_name})" if lang_name and lang_name != lang else ""}

A few-shot text classifier adapted with `xmeta adapt` from {sup["examples"]} labelled examples of
{len(metadata["label_names"])} classes, on top of a meta-trained multilingual encoder.

## Support set

- source: `{sup.get("source", "python")}` ({sup["rows"]} rows read)
- language: `{lang}`
- examples per class:
{per_class}
- dropped: {dropped_text}
- text length (characters): min {chars["min"]}, median {_fmt(chars["median"])}, max {chars["max"]}
{token_line}
## Model

- source model: `{src.get("model")}` (checkpoint `{src.get("checkpoint", "in memory")}`){f"; {trained}" if trained else ""}
- algorithm: `{ad["algorithm"]}`, head `{ad["head"]}`, distance `{ad["distance"]}`
- adaptation: {how}, seed {ad["seed"]}
- encoder: `{enc["model"]}` ({enc["pooling"]} pooling, prefix {enc["text_prefix"]!r}, max length {enc["max_length"]}), LoRA r={enc["lora_r"]}
- format: `{FORMAT}`, written by xmeta {metadata.get("xmeta_version", "?")} on {metadata.get("created", "?")}

In Python: `xmeta.load_predictor("<this dir>").predict(["..."])` (labels and probabilities).

Few-shot classifiers are only as good as their support set: expect errors on texts unlike the
examples above, and check accuracy on held-out labelled texts before relying on it.
"""


def now() -> str:
    """Creation time for the metadata (local time, ISO-like)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
