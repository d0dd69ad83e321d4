"""The benchmark loop on real SIB-200 episodes with tiny fake learners (no models).

Fakes are registered as method kinds, so they go through the same parse/describe/build path as
the real methods; a shared call log lets the tests count ``adapt`` calls and compare episodes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from xmeta.bench import BenchConfig, register_method, run_bench
from xmeta.bench.episodes import EpisodeMismatchError, assert_identical_episodes, load_eval_data, make_episodes
from xmeta.interfaces import Example, Prediction, label_names_of

LANGS = ["swh_Latn", "yor_Latn"]
CALLS: list[dict] = []  # one entry per adapt / predict call of any fake
TRUTH: dict[str, str] = {}  # text -> label name, for the oracle
FAIL_ON: set[str] = set()  # languages on which "fake-flaky" raises


class FakePredictor:
    def __init__(self, method: str, label_names: tuple[str, ...], mode: str) -> None:
        self.method, self.label_names, self.mode = method, label_names, mode

    def predict(self, texts: Sequence[str]) -> Prediction:
        CALLS.append({"method": self.method, "call": "predict", "texts": list(texts)})
        n, k = len(texts), len(self.label_names)
        if self.mode == "oracle":
            labels = np.array([self.label_names.index(TRUTH[t]) for t in texts])
        else:
            labels = np.zeros(n, dtype=int)
        probs = np.eye(k)[labels]
        return Prediction(labels, probs, self.label_names)


class FakeLearner:
    def __init__(self, method: str, mode: str) -> None:
        self.method, self.mode = method, mode

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> FakePredictor:
        lang = support[0].lang
        CALLS.append(
            {"method": self.method, "call": "adapt", "lang": lang, "support": [e.uid for e in support], "seed": seed}
        )
        if self.method == "fake-flaky" and lang in FAIL_ON:
            raise RuntimeError(f"boom on {lang}")
        return FakePredictor(self.method, label_names_of(support), self.mode)


for _name, _mode in (("fake-oracle", "oracle"), ("fake-const", "const"), ("fake-flaky", "oracle")):
    register_method(_name, lambda spec, ctx, m=_mode: FakeLearner(spec.name, m), overwrite=True, help="test fake")


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL_ON.clear()


@pytest.fixture(scope="module")
def truth(data_dir: Path) -> dict[str, str]:
    from xmeta.data.tasks import load_task

    ds = load_task("sib200", data_dir, langs=LANGS, splits=["test"])
    TRUTH.update(zip(ds["text"], ds["label_name"]))
    return TRUTH


def make_cfg(data_dir: Path, out: Path, **kw) -> BenchConfig:
    base = dict(
        task="sib200",
        langs=LANGS,
        methods=["fake-oracle", "fake-const"],
        k_shot=[1],
        q_query=2,
        episodes_per_lang=3,
        data_dir=str(data_dir),
        out=str(out),
        bootstrap=200,
        plots=False,
    )
    return BenchConfig(**{**base, **kw})


def adapts(method: str | None = None) -> list[dict]:
    return [c for c in CALLS if c["call"] == "adapt" and (method is None or c["method"] == method)]


def test_real_data_two_languages_known_accuracies(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    res = run_bench(make_cfg(data_dir, tmp_path), progress=False)
    oracle, const = res["methods"]["fake-oracle"], res["methods"]["fake-const"]
    assert oracle["mean_accuracy"] == pytest.approx(1.0) and oracle["mean_ci95"] == pytest.approx([1.0, 1.0])
    assert oracle["mean_macro_f1"] == pytest.approx(1.0)
    # Q queries per class and always class 0: exactly 1/N, whatever the episode.
    for lang in LANGS:
        assert const["per_lang"][lang]["accuracy"] == pytest.approx(1 / 7)
        assert const["per_lang"][lang]["ci95"] == pytest.approx([1 / 7, 1 / 7])
    assert len(adapts()) == 2 * len(LANGS) * 3


def test_every_method_gets_identical_episodes(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    run_bench(make_cfg(data_dir, tmp_path), progress=False)
    seen = {m: [(c["lang"], c["support"], c["seed"]) for c in adapts(m)] for m in ("fake-oracle", "fake-const")}
    queries = {m: [c["texts"] for c in CALLS if c["call"] == "predict" and c["method"] == m] for m in seen}
    assert seen["fake-oracle"] == seen["fake-const"]
    assert queries["fake-oracle"] == queries["fake-const"]
    # ... and the recorded uids are those episodes.
    res = json.loads((tmp_path / "results.json").read_text())
    recorded = [ep["support"] for lang in LANGS for ep in res["episodes"][lang]]
    assert recorded == [s for _, s, _ in seen["fake-oracle"]]


def test_identical_episode_assertion_catches_a_mismatch() -> None:
    assert_identical_episodes({"a": {(1, "x"): "f1"}, "b": {(1, "x"): "f1"}})
    with pytest.raises(EpisodeMismatchError, match="K=1 x"):
        assert_identical_episodes({"a": {(1, "x"): "f1"}, "b": {(1, "x"): "f2"}})


def test_episodes_are_fixed_by_their_parameters(data_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg(data_dir, tmp_path)
    ds = load_eval_data(cfg)
    a, b = make_episodes(cfg, ds), make_episodes(cfg, ds)
    assert [e.uids() for e in a[1]["swh_Latn"]] == [e.uids() for e in b[1]["swh_Latn"]]
    other = make_episodes(make_cfg(data_dir, tmp_path, seed=1), ds)
    assert [e.uids() for e in other[1]["swh_Latn"]] != [e.uids() for e in a[1]["swh_Latn"]]


def test_resumption_recomputes_nothing(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    cfg = make_cfg(data_dir, tmp_path, k_shot=[1, 2])
    first = run_bench(cfg, progress=False)
    assert len(adapts()) == 2 * 2 * len(LANGS) * 3
    CALLS.clear()
    second = run_bench(cfg, progress=False)
    assert adapts() == []
    for k in ("1", "2"):
        assert (
            second["by_k"][k]["methods"]["fake-oracle"]["per_lang"]
            == first["by_k"][k]["methods"]["fake-oracle"]["per_lang"]
        )
    # A new method runs alone; other episodes (another seed) are recomputed, not reused.
    run_bench(
        make_cfg(data_dir, tmp_path, k_shot=[1, 2], methods=["fake-oracle", "fake-const", "fake-flaky"]), progress=False
    )
    assert {c["method"] for c in adapts()} == {"fake-flaky"}
    CALLS.clear()
    run_bench(make_cfg(data_dir, tmp_path, k_shot=[1], seed=7), progress=False)
    assert len(adapts()) == 2 * len(LANGS) * 3


def test_a_method_failing_on_one_language_keeps_the_others(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    FAIL_ON.add("yor_Latn")
    cfg = make_cfg(data_dir, tmp_path, methods=["fake-flaky", "fake-const"])
    res = run_bench(cfg, progress=False)
    flaky = res["methods"]["fake-flaky"]
    assert flaky["per_lang"]["yor_Latn"]["status"] == "failed"
    assert "RuntimeError: boom on yor_Latn" in flaky["per_lang"]["yor_Latn"]["error"]
    assert flaky["per_lang"]["swh_Latn"]["accuracy"] == pytest.approx(1.0)
    assert flaky["complete"] is False and flaky["n_langs"] == 1 and flaky["mean_accuracy"] == pytest.approx(1.0)
    assert res["methods"]["fake-const"]["complete"] is True
    md = (tmp_path / "results.md").read_text()
    assert "failed" in md and "boom on yor_Latn" in md
    # The failed cell is retried on the next run; the finished ones are not.
    FAIL_ON.clear()
    CALLS.clear()
    res = run_bench(cfg, progress=False)
    assert [(c["method"], c["lang"]) for c in adapts()] == [("fake-flaky", "yor_Latn")] * 3
    assert res["methods"]["fake-flaky"]["complete"] is True


def test_a_method_that_cannot_load_fails_its_cells_only(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    def broken(spec, ctx):
        raise OSError("weights missing")

    register_method("fake-broken", broken, overwrite=True)
    res = run_bench(make_cfg(data_dir, tmp_path, methods=["fake-broken", "fake-oracle"]), progress=False)
    assert res["methods"]["fake-broken"]["mean_accuracy"] is None
    assert set(res["methods"]["fake-broken"]["failed"]) == set(LANGS)
    assert res["methods"]["fake-oracle"]["mean_accuracy"] == pytest.approx(1.0)


def test_results_json_schema(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    run_bench(make_cfg(data_dir, tmp_path, k_shot=[1, 2]), progress=False)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["k_shot"] == [1, 2] and set(res["by_k"]) == {"1", "2"}
    for k, r in res["by_k"].items():
        for key in ("task", "n_way", "k_shot", "q_query", "episodes_per_lang", "seed", "methods", "episodes"):
            assert key in r
        assert r["k_shot"] == int(k) and r["n_way"] == 7 and r["q_query"] == 2 and r["episodes_per_lang"] == 3
        for m in r["methods"].values():
            lo, hi = m["mean_ci95"]
            assert 0 <= lo <= m["mean_accuracy"] <= hi <= 1
            for lang in LANGS:
                s = m["per_lang"][lang]
                assert s["ci95"][0] <= s["accuracy"] <= s["ci95"][1] and 0 <= s["macro_f1"] <= 1
            assert set(m["cost"]) >= {"seconds_per_episode", "ms_per_query", "peak_rss_mb"}
            assert m["cost"]["peak_rss_mb"] > 0 and m["cost"]["seconds_per_episode"] >= 0
        for lang in LANGS:
            eps = r["episodes"][lang]
            assert len(eps) == 3
            assert all(len(e["support"]) == 7 * int(k) and len(e["query"]) == 7 * 2 for e in eps)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "results.md").is_file()
    assert "published_other_protocols" in res and set(res["published_other_protocols"]["per_lang"]) == set(LANGS)


def test_missing_predictions_count_as_wrong_unless_excluded(data_dir: Path, truth: dict, tmp_path: Path) -> None:
    cfg = make_cfg(data_dir, tmp_path / "ext")
    table = make_episodes(cfg, load_eval_data(cfg))
    queries = [q for lang in LANGS for ep in table[1][lang] for q in ep.query]
    covered = {q.uid: q.label_name for q in queries[::2]}  # about half the queries, answered correctly
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"uid": uid, "label": name}) + "\n" for uid, name in covered.items()))
    methods = ["fake-const", f"external:{preds}"]
    # Episodes may share queries, so coverage counts query occurrences (equal per language).
    expected_coverage = np.mean([q.uid in covered for q in queries])

    res = run_bench(make_cfg(data_dir, tmp_path / "ext", methods=methods), progress=False)
    ext = res["methods"][f"external:{preds}"]
    assert ext["scored_on"] == "all queries"
    assert ext["coverage"] == pytest.approx(expected_coverage)
    assert ext["mean_accuracy"] == pytest.approx(expected_coverage)  # every answer right, every gap wrong
    assert res["methods"]["fake-const"]["coverage"] == 1.0
    md = (tmp_path / "ext" / "results.md").read_text()
    assert "coverage (%)" in md and f"{100 * expected_coverage:.1f}" in md

    res = run_bench(
        make_cfg(data_dir, tmp_path / "excl", methods=methods, missing_predictions="exclude"), progress=False
    )
    ext = res["methods"][f"external:{preds}"]
    assert ext["mean_accuracy"] == pytest.approx(1.0) and ext["coverage"] == pytest.approx(expected_coverage)
    assert "(answered queries only)" in (tmp_path / "excl" / "results.md").read_text()


def test_usage_of_server_backed_predictors_reaches_the_cost_table(data_dir: Path, tmp_path: Path) -> None:
    class Metered(FakePredictor):
        def usage(self) -> dict[str, int]:
            return {"requests": 3, "cached": 1, "prompt_tokens": 1200, "completion_tokens": 4}

    class MeteredLearner(FakeLearner):
        def adapt(self, support, *, seed=0):
            return Metered(self.method, label_names_of(support), "const")

    register_method("fake-metered", lambda spec, ctx: MeteredLearner(spec.name, "const"), overwrite=True)
    res = run_bench(make_cfg(data_dir, tmp_path, methods=["fake-metered"]), progress=False)
    cost = res["methods"]["fake-metered"]["cost"]
    assert cost["prompt_tokens_per_episode"] == 1200 and cost["requests_per_episode"] == 3
    assert "1,200 + 4 (3 req, 1 cached)" in (tmp_path / "results.md").read_text()
