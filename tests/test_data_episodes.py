"""Episode sampler on tiny in-memory corpora: shapes, balance, determinism, disjointness, cross-lingual, I/O."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from xmeta.data import EpisodeSampler, InsufficientExamplesError
from xmeta.data.episode_io import episode_from_dict, episode_to_dict, load_episodes, save_episodes
from xmeta.data.schema import RecordBuilder
from xmeta.errors import InputError
from xmeta.interfaces import label_names_of

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("alpha", "beta", "gamma", "delta")
SIZES = {"train": 12, "dev": 6, "test": 8}


def tiny_corpus(langs=("aaa_Latn", "bbb_Latn"), sizes=SIZES, parallel=True, reverse_rows=False):
    """Parallel corpus: the same (split, class, j) has the same source id in every language."""
    rows = []
    sid = 0
    for split, n in sizes.items():
        for c in CLASSES:
            for j in range(n if isinstance(n, int) else n[c]):
                sid += 1
                rows += [(lang, split, sid, f"{lang} {c} {split} {j}", c) for lang in langs]
    if reverse_rows:
        rows.reverse()
    builder = RecordBuilder("tiny", CLASSES, parallel)
    for lang, split, key, text, label in rows:
        builder.add(lang=lang, split=split, key=key, text=text, label_name=label, source_id=f"tiny:{key}")
    return builder.to_dataset()


@pytest.fixture(scope="module")
def corpus():
    return tiny_corpus()


def test_shapes_balance_and_label_remap(corpus):
    sampler = EpisodeSampler(corpus, n_way=4, k_shot=2, q_query=3, langs="aaa_Latn")
    ep = sampler.episode(0)
    assert (ep.lang, ep.query_lang, ep.n_way) == ("aaa_Latn", "aaa_Latn", 4)
    assert ep.label_names == CLASSES  # all classes: corpus order, so episode labels == corpus ids
    assert len(ep.support) == 8 and len(ep.query) == 12
    assert Counter(e.label for e in ep.support) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert Counter(e.label for e in ep.query) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert label_names_of(ep.support) == ep.label_names
    for e in ep.support + ep.query:
        assert e.label_name == ep.label_names[e.label] and e.label_name in e.text and e.lang == "aaa_Latn"
    assert all(":dev:" in e.uid for e in ep.support) and all(":test:" in e.uid for e in ep.query)


def test_fewer_ways_draw_classes_per_episode(corpus):
    sampler = EpisodeSampler(corpus, n_way=2, k_shot=1, q_query=1, langs="aaa_Latn")
    subsets = {sampler.episode(i).label_names for i in range(30)}
    assert len(subsets) > 3
    for names in subsets:  # remapped to 0..1, names kept in corpus order
        assert len(names) == 2 and list(names) == sorted(names, key=CLASSES.index)


def test_varying_ways_draw_each_episode_size_stably_and_keep_episodes_disjoint(corpus):
    sampler = EpisodeSampler.for_meta_training(corpus, n_way=4, n_way_min=2, k_shot=2, q_query=3, seed=5)
    episodes = sampler.episodes(60)
    sizes = Counter(ep.n_way for ep in episodes)
    assert set(sizes) == {2, 3, 4} and min(sizes.values()) >= 10  # uniform over 2..4
    again = EpisodeSampler.for_meta_training(corpus, n_way=4, n_way_min=2, k_shot=2, q_query=3, seed=5)
    assert [again.episode(i) for i in reversed(range(60))][::-1] == episodes  # a stable function of (seed, i)
    for ep in episodes:
        assert len(ep.support) == 2 * ep.n_way and len(ep.query) == 3 * ep.n_way
        assert not {e.source_id for e in ep.support} & {e.source_id for e in ep.query}
    with pytest.raises(InputError, match="n_way_min must be between 2 and n_way=3"):
        EpisodeSampler(corpus, n_way=3, n_way_min=4)


def test_shuffle_labels_permutes_the_class_order(corpus):
    sampler = EpisodeSampler(corpus, k_shot=1, q_query=1, langs="aaa_Latn", shuffle_labels=True)
    orders = {sampler.episode(i).label_names for i in range(20)}
    assert len(orders) > 1 and all(sorted(o) == sorted(CLASSES) for o in orders)


def test_same_seed_same_episodes_other_seed_differs(corpus):
    a = EpisodeSampler(corpus, n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", seed=7)
    b = EpisodeSampler(corpus, n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", seed=7)
    c = EpisodeSampler(corpus, n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", seed=8)
    assert a.episodes(5) == b.episodes(5)
    assert [e.uids() for e in a.episodes(5)] != [e.uids() for e in c.episodes(5)]


def test_episode_i_independent_of_order_rows_and_loaded_languages(corpus):
    kw = dict(n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", seed=3)
    reference = EpisodeSampler(corpus, **kw).episode(5)
    after_others = EpisodeSampler(corpus, **kw)
    for i in (9, 0, 4, 1):
        after_others.episode(i)
    assert after_others.episode(5) == reference
    reversed_rows = EpisodeSampler(tiny_corpus(reverse_rows=True), **kw).episode(5)
    assert reversed_rows == reference
    more_langs = EpisodeSampler(tiny_corpus(langs=("aaa_Latn", "bbb_Latn", "ccc_Latn")), **kw).episode(5)
    assert more_langs == reference


def test_same_episodes_in_separate_processes(corpus):
    code = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from test_data_episodes import tiny_corpus; from xmeta.data import EpisodeSampler;"
        "s = EpisodeSampler(tiny_corpus(), n_way=3, k_shot=2, q_query=2, seed=11);"
        "print(json.dumps([s.episode(i).uids() for i in (4, 2)]))"
    )
    expected = EpisodeSampler(corpus, n_way=3, k_shot=2, q_query=2, seed=11)
    want = [expected.episode(i).uids() for i in (4, 2)]
    for hashseed in ("1", "12345"):  # Python's str hash differs per process; episodes must not
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == want


def test_meta_training_support_and_query_are_disjoint(corpus):
    sampler = EpisodeSampler.for_meta_training(corpus, n_way=4, k_shot=5, q_query=7)
    for i in range(25):
        ep = sampler.episode(i)
        s_uids, q_uids = {e.uid for e in ep.support}, {e.uid for e in ep.query}
        assert len(s_uids) == 20 and len(q_uids) == 28 and not s_uids & q_uids
        assert not {e.source_id for e in ep.support} & {e.source_id for e in ep.query}
        assert all(":train:" in u for u in s_uids | q_uids)


def test_several_languages_are_picked_stably(corpus):
    sampler = EpisodeSampler(corpus, k_shot=1, q_query=1)
    langs = [sampler.episode(i).lang for i in range(30)]
    assert set(langs) == {"aaa_Latn", "bbb_Latn"}
    assert langs == [EpisodeSampler(corpus, k_shot=1, q_query=1).episode(i).lang for i in range(30)]
    assert sampler.episode(3, lang="bbb_Latn").lang == "bbb_Latn"
    assert sampler.episode(3, lang="bbb").lang == "bbb_Latn"  # a bare ISO code names its only variant
    assert EpisodeSampler(corpus, langs="aaa", k_shot=1, q_query=1).langs == ["aaa_Latn"]


def test_cross_lingual_episodes(corpus):
    sampler = EpisodeSampler.for_meta_training(corpus, k_shot=3, q_query=4, langs="aaa_Latn", query_langs="bbb_Latn")
    for i in range(10):
        ep = sampler.episode(i)
        assert ep.lang == "aaa_Latn" and ep.query_lang == "bbb_Latn"
        assert {e.lang for e in ep.support} == {"aaa_Latn"} and {e.lang for e in ep.query} == {"bbb_Latn"}
        # Same split of a parallel corpus: a query must not be the translation of a support sentence.
        assert not {e.source_id for e in ep.support} & {e.source_id for e in ep.query}
    evaluation = EpisodeSampler(corpus, k_shot=2, q_query=2, langs="bbb_Latn", query_langs="aaa_Latn")
    ep = evaluation.episode(0)
    assert all(":bbb_Latn:dev:" in e.uid for e in ep.support) and all(":aaa_Latn:test:" in e.uid for e in ep.query)


def test_all_remaining_queries(corpus):
    ep = EpisodeSampler(corpus, n_way=2, k_shot=2, q_query=None, langs="aaa_Latn").episode(0)
    assert len(ep.query) == 2 * SIZES["test"]
    ep = EpisodeSampler.for_meta_training(corpus, k_shot=5, q_query=None, langs="aaa_Latn").episode(0)
    assert len(ep.query) == 4 * (SIZES["train"] - 5)


def test_small_class_error_names_language_split_and_class():
    small = tiny_corpus(sizes={"train": 4, "dev": {"alpha": 4, "beta": 1, "gamma": 4, "delta": 4}, "test": 4})
    sampler = EpisodeSampler(small, k_shot=2, q_query=2, langs="aaa_Latn")
    with pytest.raises(InsufficientExamplesError, match=r"class 'beta': aaa_Latn/dev has 1 examples \(needs 2\)"):
        sampler.episode(0)
    with pytest.raises(
        InsufficientExamplesError, match=r"class 'alpha': aaa_Latn/train has 4 examples, needs k_shot \+ q_query = 5"
    ):
        EpisodeSampler.for_meta_training(small, k_shot=2, q_query=3, langs="aaa_Latn").episode(0)


def test_small_class_fallbacks(caplog):
    small = tiny_corpus(sizes={"train": 4, "dev": {"alpha": 4, "beta": 1, "gamma": 4, "delta": 4}, "test": 4})
    skip = EpisodeSampler(small, n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", on_small_class="skip")
    assert all("beta" not in skip.episode(i).label_names for i in range(10))
    assert any("on_small_class='skip'" in r.getMessage() for r in caplog.records)
    with pytest.raises(InsufficientExamplesError, match="only 3 classes"):
        EpisodeSampler(small, k_shot=2, q_query=2, langs="aaa_Latn", on_small_class="skip").episode(0)
    shrink = EpisodeSampler(small, k_shot=2, q_query=2, langs="aaa_Latn", on_small_class="shrink").episode(0)
    assert Counter(e.label_name for e in shrink.support) == {"alpha": 2, "beta": 1, "gamma": 2, "delta": 2}


def test_bad_arguments(corpus):
    with pytest.raises(InputError, match="n_way must be between 2 and 4"):
        EpisodeSampler(corpus, n_way=5)
    with pytest.raises(InputError, match="k_shot and q_query must be >= 1"):
        EpisodeSampler(corpus, k_shot=0)
    with pytest.raises(InputError, match="language 'aaa_Latm' is not in the dataset.*Did you mean 'aaa_Latn'"):
        EpisodeSampler(corpus, langs="aaa_Latm")
    with pytest.raises(InputError, match="Unknown split"):
        EpisodeSampler(corpus, support_split="training")


def test_serialise_and_rebuild(corpus, tmp_path):
    sampler = EpisodeSampler(corpus, n_way=3, k_shot=2, q_query=2, langs="aaa_Latn", query_langs="bbb_Latn", seed=5)
    eps = sampler.episodes(4, start=2)
    stored = [episode_to_dict(ep) for ep in eps]
    assert json.loads(json.dumps(stored)) == stored and stored[0]["index"] == 2
    assert [episode_from_dict(d, corpus) for d in stored] == eps
    assert [episode_from_dict(d, sampler) for d in stored] == eps
    save_episodes(tmp_path / "eps.jsonl", eps)
    assert load_episodes(tmp_path / "eps.jsonl", corpus) == eps
    broken = dict(stored[0], query=["tiny:zzz_Latn:test:1"])
    with pytest.raises(InputError, match="uid 'tiny:zzz_Latn:test:1' is not in the given corpus"):
        episode_from_dict(broken, corpus)
