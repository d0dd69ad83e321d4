"""The ICL baseline on the real default LLM (gemma-3-270m) and real SIB-200 episodes (slow).

The 7-way 5-shot prompts are ~1,700 tokens, far past gemma-3's 512-token sliding window, so the
cache-equals-naive check covers the hybrid sliding/full KV cache of the real model.
"""

from __future__ import annotations

import csv
import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from xmeta.icl import ICLLearner
from xmeta.interfaces import Example

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)


def sib_episode(
    data_dir: Path, lang: str, seed: int, k_shot: int = 5, q_query: int = 5
) -> tuple[list[Example], list[Example]]:
    """7-way episode: ``k_shot`` support per class from dev, ``q_query`` queries per class from test."""

    def read(split: str) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        path = data_dir / "sib200" / "annotated" / lang / f"{split}.tsv"
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                out[row["category"]].append((f"{lang}/{split}/{row['index_id']}", row["text"]))
        return out

    dev, test, rng = read("dev"), read("test"), random.Random(seed)
    support, query = [], []
    for label, name in enumerate(sorted(dev)):
        support += [Example(u, t, label, name, lang) for u, t in rng.sample(dev[name], k_shot)]
        query += [Example(u, t, label, name, lang) for u, t in rng.sample(test[name], q_query)]
    return support, query


@pytest.fixture(scope="module")
def learner() -> ICLLearner:
    lrn = ICLLearner("gemma-3-270m", dtype="float32", device="cpu")
    lrn.load()
    return lrn


def test_real_cache_equals_naive(learner: ICLLearner, data_dir: Path) -> None:
    support, query = sib_episode(data_dir, "swh_Latn", seed=0)
    predictor = learner.adapt(support, seed=0)
    assert predictor.label_names == tuple(sorted({e.label_name for e in support})) and len(predictor.label_names) == 7
    q_ids = [predictor._tokens(predictor.template.render_query(query[0].text))]
    prefix_ids = predictor._prefix_ids(predictor.demonstrations)
    assert len(prefix_ids) > 2 * 512, "the prompt should be longer than the sliding window"
    # The 7 SIB labels (one multi-token: " science/technology") plus one more multi-token label,
    # so that both the one-pass and the two-step cached paths are compared with the naive one.
    labels = [*predictor._label_ids, predictor._tokens(" sports news")]
    assert sum(len(x) > 1 for x in predictor._label_ids) == 1 and len(labels[-1]) > 1
    scorer = predictor.scorer
    naive = scorer.score_naive(prefix_ids, q_ids, labels).logprob_sum
    state = scorer.encode(prefix_ids)
    two_step = scorer.score_cached(state, q_ids, labels).logprob_sum
    one_pass = scorer.score_cached(state, q_ids, labels[:-1]).logprob_sum
    logger.info("real gemma naive %s; max |cached - naive| %.2e", naive.round(3), np.abs(two_step - naive).max())
    np.testing.assert_allclose(two_step, naive, atol=1e-3, rtol=0)
    np.testing.assert_allclose(one_pass, naive[:, :-1], atol=1e-3, rtol=0)


@pytest.mark.parametrize("lang", ["eng_Latn", "swh_Latn"])
def test_real_episode_accuracy_is_sane(learner: ICLLearner, data_dir: Path, lang: str) -> None:
    support, query = sib_episode(data_dir, lang, seed=1)
    predictor = learner.adapt(support, seed=1)
    pred = predictor.predict([q.text for q in query])
    gold = np.array([q.label for q in query])
    accuracy = float((pred.labels == gold).mean())
    logger.info("gemma-3-270m 7-way 5-shot SIB-200 %s: accuracy %.3f on %d queries", lang, accuracy, len(query))
    assert predictor.n_demonstrations_used == len(support)
    assert np.allclose(pred.probs.sum(axis=1), 1.0) and np.isfinite(pred.probs).all()
    assert accuracy > 1 / 7, f"{lang}: accuracy {accuracy:.3f} is not above chance"
