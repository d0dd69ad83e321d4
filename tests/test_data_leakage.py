"""Leakage guard: a planted leak (a translation of an evaluation query in meta-training) is caught."""

from __future__ import annotations

import datasets
import pytest
from test_data_episodes import tiny_corpus  # tests/ is on sys.path under pytest

from xmeta.data import EpisodeSampler, LeakageError, check_leakage, find_leaks
from xmeta.data.schema import select_rows


@pytest.fixture(scope="module")
def corpus():
    return tiny_corpus(langs=("eng_Latn", "swh_Latn", "yor_Latn"))


def test_clean_protocol_passes(corpus):
    train = EpisodeSampler.for_meta_training(corpus, langs=["eng_Latn", "swh_Latn"], k_shot=2, q_query=2)
    evaluation = EpisodeSampler.for_evaluation(corpus, langs="yor_Latn", k_shot=2, q_query=2)
    check_leakage(train, evaluation)
    check_leakage(train.episodes(5), evaluation.episodes(5))


def test_planted_translation_leak_is_caught(corpus):
    # Plant: English *test* rows join the meta-training data. Their translations are Yoruba test queries.
    english_test = select_rows(corpus, ["eng_Latn"], ["test"]).select(range(3))
    planted = english_test.map(lambda r: {"split": "train"})
    leaky = datasets.concatenate_datasets([select_rows(corpus, ["eng_Latn"], ["train"]), planted])
    train = EpisodeSampler.for_meta_training(leaky, k_shot=2, q_query=2)
    evaluation = EpisodeSampler.for_evaluation(corpus, langs="yor_Latn", k_shot=2, q_query=2)
    leaks = find_leaks(train, evaluation)
    assert len(leaks) == 3 and all(ev.startswith("tiny:yor_Latn:test:") for ev, _ in leaks)
    with pytest.raises(
        LeakageError,
        match=r"3 evaluation queries were seen in meta-training .*tiny:yor_Latn:test:\d+ \(seen in training as tiny:eng_Latn:test:\d+\)",
    ):
        check_leakage(train, evaluation)
    # Datasets and episodes are accepted as sources too.
    with pytest.raises(LeakageError):
        check_leakage(leaky, select_rows(corpus, ["yor_Latn"], ["test"]))


def test_leak_listing_is_capped(corpus):
    with pytest.raises(LeakageError, match=r"and \d+ more\. Meta-train on other splits"):
        check_leakage(corpus, corpus, max_listed=2)


def test_exclude_removes_the_leak(corpus, caplog):
    evaluation = EpisodeSampler.for_evaluation(corpus, langs="yor_Latn", k_shot=2, q_query=2)
    # Meta-training that (wrongly) draws queries from test is cleaned by excluding the evaluation queries.
    train = EpisodeSampler(corpus, langs="eng_Latn", support_split="train", query_split="test", k_shot=2, q_query=2)
    with pytest.raises(LeakageError):
        check_leakage(train, evaluation)
    cleaned = EpisodeSampler(
        corpus, langs="eng_Latn", support_split="train", query_split="test", k_shot=2, q_query=2, exclude=evaluation
    )
    assert any("excluded" in r.getMessage() for r in caplog.records)
    check_leakage(cleaned, evaluation)
    with pytest.raises(Exception, match="no examples in split 'test'"):
        cleaned.episode(0)  # every English test sentence is a translation of a Yoruba query


def test_episode_queries_only_count_as_evaluation(corpus):
    evaluation = EpisodeSampler.for_evaluation(corpus, langs="yor_Latn", k_shot=2, q_query=2)
    ep = evaluation.episode(0)
    # The evaluation *support* (dev) is not a query: training on its translations is not flagged...
    support_translations = select_rows(corpus, ["eng_Latn"], ["dev"]).filter(
        lambda r: r["source_id"] in {e.source_id for e in ep.support}
    )
    check_leakage(support_translations, [ep])
    # ...but a query's translation is.
    query_translation = select_rows(corpus, ["eng_Latn"], ["test"]).filter(
        lambda r: r["source_id"] == ep.query[0].source_id
    )
    with pytest.raises(LeakageError, match="1 evaluation queries"):
        check_leakage(query_translation, [ep])
