"""All of the real SIB-200 and AfriSenti data: load time (cold and cached), integrity, episodes, leakage."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import pytest

from xmeta.data import EpisodeSampler, LeakageError, check_leakage, high_resource_languages, load_task
from xmeta.data.languages import languages_in_tier
from xmeta.data.schema import column_values

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sib(data_dir, tmp_path_factory):
    """All 184 languages, loaded twice: parsed (cold), then from the Arrow cache (warm)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XMETA_CACHE", str(tmp_path_factory.mktemp("cache")))
        start = time.perf_counter()
        cold = load_task("sib200", data_dir=data_dir)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = load_task("sib200", data_dir=data_dir)
        warm_s = time.perf_counter() - start
    return {"cold": cold, "warm": warm, "cold_s": cold_s, "warm_s": warm_s}


def test_all_languages_load_and_are_served_from_the_cache(sib):
    assert len(sib["cold"]) == len(sib["warm"]) == 184 * (701 + 99 + 204)
    # Times are a benchmark figure (logged here, reported in the README), never a pass/fail bound.
    logging.getLogger(__name__).info("SIB-200 load: cold %.2fs, warm %.2fs", sib["cold_s"], sib["warm_s"])
    assert sib["warm"].cache_files  # served memory-mapped from the cache
    assert sib["warm"]["uid"][:50] == sib["cold"]["uid"][:50]


def test_parallel_structure_is_intact(sib):
    ds = sib["warm"]
    langs, splits = column_values(ds, "lang"), column_values(ds, "split")
    sources, labels = column_values(ds, "source_id"), column_values(ds, "label")
    counts = defaultdict(int)
    label_of, split_of = {}, {}
    for lang, split, source, label in zip(langs, splits, sources, labels):
        counts[(lang, split)] += 1
        # The same sentence has the same label in every language (label ids are language-independent)
        assert label_of.setdefault(source, label) == label
        # and splits are disjoint in sentences.
        assert split_of.setdefault(source, split) == split
    assert len({lang for lang, _ in counts}) == 184
    assert {(s, n) for (_, s), n in counts.items()} == {("train", 701), ("dev", 99), ("test", 204)}


def test_every_language_gives_a_7_way_5_shot_evaluation_episode(sib):
    sampler = EpisodeSampler.for_evaluation(sib["warm"], n_way=7, k_shot=5, q_query=5)
    for lang in sampler.langs:
        ep = sampler.episode(0, lang=lang)
        assert len(ep.support) == 35 and len(ep.query) == 35 and ep.query_lang == lang


def test_protocol_has_no_leak_and_a_planted_one_is_caught(sib):
    ds = sib["warm"]
    present = sorted(set(column_values(ds, "lang")))
    low = languages_in_tier("low", available=present)[:25]
    train_langs = high_resource_languages(available=present, n=10)
    train = EpisodeSampler.for_meta_training(ds, langs=train_langs, k_shot=5, q_query=5)
    evaluation = EpisodeSampler.for_evaluation(ds, langs=low, k_shot=5, q_query=5)
    check_leakage(train, evaluation)
    # Planted: meta-training also draws queries from English *test*; those are translations of every
    # evaluation query.
    leaky = EpisodeSampler(ds, langs=train_langs, support_split="train", query_split="test", k_shot=5, q_query=5)
    with pytest.raises(LeakageError, match=r"evaluation queries were seen in meta-training"):
        check_leakage(leaky, evaluation)


def test_all_of_afrisenti(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path))
    ds = load_task("afrisenti", data_dir=data_dir)
    langs = sorted(set(column_values(ds, "lang")))
    assert len(langs) == 14 and "hau_Latn" in langs and "pcm_Latn" in langs
    assert ds.features["label"].names == ["negative", "neutral", "positive"]
    per = defaultdict(int)
    for lang, split in zip(column_values(ds, "lang"), column_values(ds, "split")):
        per[(lang, split)] += 1
    assert per[("hau_Latn", "train")] == 14172 and per[("orm_Latn", "train")] == 0 and per[("tir_Ethi", "train")] == 0
    sampler = EpisodeSampler.for_evaluation(ds, k_shot=5, q_query=5)
    for lang in langs:
        assert len(sampler.episode(0, lang=lang).support) == 15
