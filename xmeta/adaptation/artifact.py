"""The adapted-model artifact: safetensors + JSON + a model card, never pickle.

Layout of a directory written by ``AdaptedPredictor.save`` / ``xmeta adapt --out DIR``::

    DIR/
      adapted.safetensors   the adapted tensors only: LoRA adapters, head tensors (projection,
                            temperature), the episode head (linear heads) or ``prototypes`` (proto
                            head); the frozen backbone is re-resolved from the encoder config
      xmeta_adapted.json    format version, label names, language, encoder and meta configs,
                            adaptation settings, support statistics, source model
      README.md             model card (support statistics, language, source model, usage)

The format tag is ``xmeta-adapted/<major>``; a reader refuses other majors with a message saying
which xmeta wrote it, so an old install never silently mis-reads a newer artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from xmeta.adaptation.source import ADAPTED_CONFIG, META_CONFIG
from xmeta.errors import InputError

FORMAT_NAME = "xmeta-adapted"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
WEIGHTS_FILE = "adapted.safetensors"
CARD_FILE = "README.md"
PROTOTYPES = "prototypes"


def check_format(tag: Any, where: Path) -> None:
    """Raise ``InputError`` unless ``tag`` is a format this version reads."""
    if tag == FORMAT:
        return
    if isinstance(tag, str) and tag.startswith(FORMAT_NAME + "/"):
        raise InputError(
            f"{where}: adapted-model format {tag!r} is not supported by this xmeta (it reads {FORMAT!r}); "
            "install the xmeta version that wrote it, or re-run `xmeta adapt` with this one"
        )
    raise InputError(f"{where}: not an xmeta adapted model (format {tag!r}, expected {FORMAT!r})")


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The checked JSON metadata of an adapted-model directory.

    Raises:
        InputError: missing directory or files, invalid JSON, an unsupported format version, or a
            meta-training checkpoint passed where an adapted model is expected.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"adapted model directory not found: {root}")
    path = root / ADAPTED_CONFIG
    if not path.is_file():
        if (root / META_CONFIG).is_file():
            raise InputError(
                f"{root} is a meta-training checkpoint, not an adapted model; run "
                f"`xmeta adapt --model {root} --support FILE --out DIR` first and predict with DIR"
            )
        raise InputError(f"{root}: not an adapted model (missing {ADAPTED_CONFIG}; made by `xmeta adapt --out`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    check_format(data.get("format"), path)
    for key in ("label_names", "encoder", "meta"):
        if key not in data:
            raise InputError(f"{path}: missing key {key!r}")
    names = data["label_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: label_names must be a list of at least 2 strings, got {names!r:.80}")
    if not (root / WEIGHTS_FILE).is_file():
        raise InputError(f"{root}: missing {WEIGHTS_FILE} (the adapted tensors); re-run `xmeta adapt`")
    return data


def write_artifact(directory: str | Path, tensors: dict[str, Any], metadata: dict[str, Any], card: str) -> Path:
    """Write the artifact atomically (temporary directory, then rename).

    An existing adapted model at ``directory`` is replaced; any other non-empty directory is
    refused, so a typo in ``--out`` never deletes a user's files.

    Raises:
        InputError: ``directory`` is a file or a non-empty directory that is not an adapted model.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / ADAPTED_CONFIG).is_file():
        raise InputError(f"--out {out}: directory exists and is not an adapted model; choose a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(clean, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        text = json.dumps({"format": FORMAT, **metadata}, indent=2, ensure_ascii=False) + "\n"
        (tmp / ADAPTED_CONFIG).write_text(text, encoding="utf-8")
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_tensors(directory: str | Path, device: str = "cpu") -> dict[str, Any]:
    """The adapted tensors (safetensors: no code is executed while loading).

    Raises:
        InputError: a corrupt or truncated file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the adapted tensors ({err})") from None


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

## Use

```bash
xmeta predict --model <this dir> --input texts.txt          # JSON lines: text, label, scores
```

```python
import xmeta
pred = xmeta.load_predictor("<this dir>").predict(["..."])
pred.names(), pred.probs
```

Few-shot classifiers are only as good as their support set: expect errors on texts unlike the
examples above, and check accuracy on held-out labelled texts before relying on it.
"""


def now() -> str:
    """Creation time for the metadata (local time, ISO-like)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
