"""Model cards in the Hub's convention (YAML front matter) and ``push_to_hub``. Torch-free.

The front matter carries ``library_name``, ``base_model``, ``language``, ``datasets``, ``metrics``,
``license``, ``pipeline_tag`` and ``tags``, so the Hub files an uploaded artifact under its base
model, languages and datasets. See https://huggingface.co/docs/hub/model-cards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from xmeta.artifacts.manifest import Manifest
from xmeta.errors import XmetaError

logger = logging.getLogger(__name__)

# Corpora by task name: where their Hub copies live (the Hub links a card's ``datasets`` to them).
TASK_DATASETS = {"sib200": "Davlan/sib200", "afrisenti": "shmuhammad/AfriSenti-twitter-sentiment"}
_LICENSES = {"MIT": "mit", "Apache-2.0": "apache-2.0"}


def base_model_of(model: str) -> tuple[str | None, str]:
    """The Hub id and Hub license tag of an encoder named by a zoo name, hub id or directory."""
    from xmeta.models.zoo import ZOO

    if model in ZOO:
        spec = ZOO.get(model)
        return spec.hub_id, _LICENSES.get(spec.license, "other")
    if "/" in model and not Path(model).expanduser().exists():
        return model, "other"
    return None, "other"


def front_matter(manifest: Manifest, languages: Sequence[str], datasets: Sequence[str], pipeline_tag: str) -> str:
    """The YAML block that opens a Hub model card."""
    _, license_tag = base_model_of(str(manifest.encoder.get("model", "")))
    meta = {
        "library_name": "peft",
        "base_model": manifest.base_model,
        "language": sorted({code.split("_")[0] for code in languages}) or None,
        "datasets": list(datasets) or None,
        "metrics": ["accuracy"],
        "license": license_tag,
        "pipeline_tag": pipeline_tag,
        "tags": ["xmeta", "few-shot", "meta-learning", "lora", str(manifest.meta.get("algorithm", ""))],
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def read_front_matter(card: str) -> dict:
    """The YAML front matter of a card (empty when it has none)."""
    if not card.startswith("---\n"):
        return {}
    end = card.find("\n---", 4)
    return yaml.safe_load(card[4:end]) or {} if end > 0 else {}


def push_to_hub(
    directory: str | os.PathLike[str], repo_id: str, *, private: bool = False, token: str | None = None
) -> str:
    """Verify an artifact and upload it to a Hub model repository (created if needed); returns its URL.

    The token comes from ``token``, ``$HF_TOKEN`` or ``huggingface-cli login``.

    Raises:
        ArtifactError: the artifact fails verification (nothing is uploaded).
        XmetaError: the Hub is disabled (``HF_HUB_OFFLINE``) or the upload fails.
    """
    from xmeta.artifacts.manifest import read_manifest, verify

    manifest = read_manifest(directory)
    verify(manifest)
    if manifest.legacy:
        raise XmetaError(f"{directory}: old format without digests; run `xmeta artifacts migrate {directory}` first")
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.constants import HF_HUB_OFFLINE
    except ImportError as err:  # pragma: no cover - a dependency of transformers
        raise XmetaError(f"push_to_hub needs huggingface_hub ({err})") from None
    if HF_HUB_OFFLINE:
        raise XmetaError("the Hugging Face Hub is disabled here (HF_HUB_OFFLINE is set); push where you are online")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                                 commit_message=f"xmeta {manifest.kind} artifact ({manifest.xmeta_version})")  # fmt: skip
    except Exception as err:  # network, auth, quota: one line, the cause named
        raise XmetaError(f"push of {directory} to {repo_id} failed: {err}") from None
    logger.info("pushed %s to %s", directory, repo_id)
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo_id}"))
