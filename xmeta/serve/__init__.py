"""``xmeta serve``: adapted classifiers behind an HTTP endpoint, with dynamic batching.

    from xmeta.serve import load_models, create_app, ServeSettings
    app = create_app(load_models({"swh": "models/swh"}), ServeSettings(max_wait_ms=5))

``load_models`` loads each adapted model once and shares one backbone between models whose
encoder configs are equal (the adapted tensors are passed to the backbone functionally, so
sharing is safe). ``create_app`` (``xmeta.serve.app``) builds the FastAPI app; the batching that
merges concurrent requests into one forward pass is ``xmeta.serve.batching``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xmeta.serve.app import AdaptRequest, ServedModel


def load_models(
    specs: Mapping[str, str | Path], *, batch_size: int = 64, precision: str = "fp32"
) -> dict[str, ServedModel]:
    """Load adapted-model directories (name -> directory), sharing backbones with equal configs.

    Raises:
        InputError: an unusable directory (see ``xmeta.load_predictor``).
    """
    from xmeta.adaptation import load_predictor
    from xmeta.adaptation.predictor import AdaptedPredictor
    from xmeta.artifacts import resolve
    from xmeta.artifacts.manifest import read_manifest
    from xmeta.serve.app import ServedModel, describe

    encoders: dict[str, Any] = {}
    out: dict[str, ServedModel] = {}
    for name, directory in specs.items():
        root = Path(directory)
        key = json.dumps(read_manifest(resolve(root, "adapted")).encoder, sort_keys=True)
        if key in encoders:
            predictor = AdaptedPredictor.load(root, encoder=encoders[key], batch_size=batch_size, precision=precision)
        else:
            predictor = load_predictor(root, batch_size=batch_size, precision=precision)  # type: ignore[arg-type]
            encoders[key] = predictor.model.encoder
        out[name] = ServedModel(predictor, describe(name, predictor, root))
    return out


def make_adapter(
    adapt_dir: Path, bases: Mapping[str, str] | None = None, *, batch_size: int = 64, precision: str = "fp32"
):
    """The ``POST /v1/adapt`` handler: adapt, persist under ``adapt_dir/NAME``, return (predictor, dir).

    ``bases`` maps the names a client may send as ``base`` to meta-trained models (default:
    ``{"default": "default"}``); a client can never name a path on the server.
    """
    bases = dict(bases or {"default": "default"})
    sources: dict[str, Any] = {}

    def adapter(body: AdaptRequest) -> tuple[Any, Path]:
        import xmeta
        from xmeta.adaptation import load_meta

        if body.base not in bases:
            raise ValueError(f"unknown base {body.base!r}; this server adapts from: {', '.join(sorted(bases))}")
        if body.base not in sources:
            sources[body.base] = load_meta(bases[body.base])
        pairs = [(item.text, item.label) for item in body.support]
        predictor = xmeta.adapt(pairs, sources[body.base], lang=body.lang, batch_size=batch_size, precision=precision)  # type: ignore[arg-type]
        directory = predictor.save(adapt_dir / body.name)
        return predictor, directory

    return adapter


def __getattr__(name: str) -> Any:  # lazy: `import xmeta.serve` must not import FastAPI
    if name in ("create_app", "ServeSettings", "ServedModel"):
        from xmeta.serve import app

        return getattr(app, name)
    raise AttributeError(name)
