"""External predictions: JSONL/CSV loading, errors naming file and line, uid lookup, coverage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmeta.errors import InputError, XmetaError
from xmeta.icl.external import ExternalLearner, load_external_predictions, predict_uids, score_external
from xmeta.interfaces import Episode, Example, Learner, Predictor

NAMES = ("sports", "travel", "science/technology")


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def episode() -> Episode:
    support = tuple(Example(f"s{i}", f"support {i}", i, n) for i, n in enumerate(NAMES))
    query = (
        Example("q0", "first query", 0, "sports"),
        Example("q1", "second query", 2, "science/technology"),
        Example("q2", "third query", 1, "travel"),
        Example("q3", "fourth query", 1, "travel"),
    )
    return Episode(index=0, lang="swh_Latn", query_lang="swh_Latn", label_names=NAMES, support=support, query=query)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "gpt.jsonl",
        [
            {"uid": "q0", "label": "sports", "text": "first query"},
            {"uid": "q1", "label": " Science/Technology "},  # case and spaces vary in LLM answers
            "",
            {"uid": "q2", "label": "weather", "text": "third query"},  # not a label of the episode
            {"uid": "other", "label": "travel"},
        ],
    )


def test_load_jsonl(jsonl: Path) -> None:
    preds = load_external_predictions(jsonl)
    assert dict(preds) == {"q0": "sports", "q1": "Science/Technology", "q2": "weather", "other": "travel"}
    assert preds.texts == {"q0": "first query", "q2": "third query"} and preds.path == jsonl


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_load_csv_and_tsv(tmp_path: Path, suffix: str, sep: str) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_text(sep.join(["uid", "label", "extra"]) + "\n" + sep.join(["q0", "travel", "x"]) + "\n")
    assert dict(load_external_predictions(path)) == {"q0": "travel"}


@pytest.mark.parametrize(
    ("rows", "where", "message"),
    [
        ([{"uid": "a", "label": "x"}, "{not json"], ":2:", "invalid JSON"),
        ([{"uid": "a"}], ":1:", "missing label"),
        ([{"label": "x"}], ":1:", "missing uid"),
        ([{"uid": "a", "label": 3}], ":1:", "label name"),
        (["[1, 2]"], ":1:", "JSON object"),
        ([{"uid": "a", "label": "x"}, {"uid": "b", "label": "y"}, {"uid": "a", "label": "z"}], ":3:", "line 1"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, rows: list[object], where: str, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=message) as err:
        load_external_predictions(path)
    assert f"{path}{where}" in str(err.value)


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("uid,prediction\nq0,sports\n")
    with pytest.raises(InputError, match=rf"{path}:1: header lacks column\(s\) \['label'\]"):
        load_external_predictions(path)
    path.write_text("uid,label\nq0,sports\nq1,\n")
    with pytest.raises(InputError, match=rf"{path}:3: missing label"):
        load_external_predictions(path)


def test_other_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_external_predictions(tmp_path / "nope.jsonl")
    (tmp_path / "p.parquet").write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        load_external_predictions(tmp_path / "p.parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no predictions"):
        load_external_predictions(tmp_path / "empty.jsonl")


def test_predictions_on_the_same_uids(jsonl: Path, episode: Episode) -> None:
    pred = score_external(load_external_predictions(jsonl), episode)
    assert pred.labels.tolist() == [0, 2, -1, -1]
    assert pred.missing.tolist() == [False, False, False, True] and pred.n_missing == 1
    assert pred.invalid.tolist() == [False, False, True, False] and pred.n_invalid == 1
    assert pred.names() == ["sports", "science/technology", None, None]
    np.testing.assert_allclose(pred.probs[0], [1, 0, 0])
    np.testing.assert_allclose(pred.probs[3], [1 / 3] * 3)
    gold = np.array([q.label for q in episode.query])
    assert (pred.labels == gold).mean() == 0.5  # unanswered queries count as errors


def test_external_learner_fits_the_protocols(jsonl: Path, episode: Episode, caplog) -> None:
    learner = ExternalLearner(jsonl)
    predictor = learner.adapt(episode.support)
    assert isinstance(learner, Learner) and isinstance(predictor, Predictor)
    assert learner.name == "gpt" and predictor.label_names == NAMES
    by_uid = predictor.predict_examples(episode.query)
    by_text = predictor.predict(["first query", "third query", "unseen text"])
    assert by_uid.labels.tolist() == [0, 2, -1, -1]
    assert by_text.labels.tolist() == [0, -1, -1] and by_text.n_missing == 1 and by_text.n_invalid == 1
    assert (learner.coverage.queries, learner.coverage.missing, learner.coverage.invalid) == (7, 2, 2)
    assert "missing" in caplog.text


def test_predict_by_text_needs_a_mapping(tmp_path: Path, episode: Episode) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"uid": "q0", "label": "sports"}])
    with pytest.raises(XmetaError, match="predict_examples"):
        ExternalLearner(path).adapt(episode.support).predict(["first query"])
    mapped = ExternalLearner(path, uid_by_text={"first query": "q0"}, name="hosted").adapt(episode.support)
    assert mapped.predict(["first query"]).labels.tolist() == [0]


def test_predict_uids_directly() -> None:
    out = predict_uids({"a": "travel"}, ["a", "b"], NAMES)
    assert out.labels.tolist() == [1, -1] and out.label_names == NAMES
