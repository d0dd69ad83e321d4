"""Task diversity: SIB-200 episodes mixed with AfriSenti ones (xmeta.data.mixture), and its guard rails."""

from __future__ import annotations

import pytest

from xmeta.config import load_config
from xmeta.data import EpisodeSampler, load_task
from xmeta.data.leakage import records
from xmeta.data.mixture import MixedSampler
from xmeta.training.config import DataConfig, TrainConfig


@pytest.fixture(scope="module")
def samplers(data_dir):
    sib = load_task("sib200", data_dir=str(data_dir), langs=["eng_Latn", "fra_Latn"], splits=["train"])
    senti = load_task("afrisenti", data_dir=str(data_dir), langs=["pcm", "arq"], splits=["train"])
    main = EpisodeSampler.for_meta_training(sib, n_way=7, k_shot=5, q_query=5, seed=3)
    aux = EpisodeSampler.for_meta_training(senti, n_way=3, k_shot=5, q_query=5, seed=3)
    return main, aux


def test_mixed_episodes_come_from_both_tasks_stably(samplers):
    main, aux = samplers
    mixed = MixedSampler(main, aux, 0.25, seed=3)
    episodes = [mixed.episode(i) for i in range(200)]
    from_aux = [ep.query[0].uid.startswith("afrisenti:") for ep in episodes]
    assert 30 <= sum(from_aux) <= 70  # ~25% of 200
    for ep, is_aux in zip(episodes, from_aux):
        assert ep.n_way == (3 if is_aux else 7) and mixed.is_aux(ep.index) == is_aux
        assert ep == (aux if is_aux else main).episode(ep.index)  # the same episode as its own sampler's
    again = MixedSampler(main, aux, 0.25, seed=3)
    assert [again.episode(i) for i in reversed(range(200))][::-1] == episodes
    assert set(records(mixed, "train")) == set(records(main, "train")) | set(records(aux, "train"))


def test_aux_languages_must_not_be_evaluation_or_validation_languages():
    with pytest.raises(ValueError, match=r"\['hau', 'swa'\] are evaluation or validation languages"):
        DataConfig(aux_task="afrisenti", aux_langs=("arq", "hau", "swa"), aux_fraction=0.2)
    with pytest.raises(ValueError, match="need aux_task"):
        DataConfig(aux_langs=("arq",))
    with pytest.raises(ValueError, match="0 < aux_fraction <= 1"):
        DataConfig(aux_task="afrisenti", aux_langs=("arq",), aux_fraction=0.0)
    cfg = load_config(
        TrainConfig, None, ["data.aux_task=afrisenti", "data.aux_langs=[arq, pcm]", "data.aux_fraction=0.25"]
    )
    assert cfg.data.aux_langs == ("arq", "pcm")
