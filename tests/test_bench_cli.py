"""``xmeta bench``: config validation, YAML + overrides + flags, refusal before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from const_learner import ConstLearner

from xmeta.bench import BenchConfig, register_method
from xmeta.cli import build_parser, main
from xmeta.commands.bench import load_bench_config
from xmeta.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


register_method("fake-cli", lambda spec, ctx: ConstLearner(), overwrite=True, help="test fake")
register_method(
    "fake-cli-opts",
    lambda spec, ctx: ConstLearner(),
    arg="optional",
    arg_name="size",
    options={"k": 3},
    help="test fake registered from outside, with options",
    overwrite=True,
)


def parse(argv: list[str]):  # noqa: ANN201
    return build_parser().parse_args(["bench", *argv])


def test_help_lists_flags_and_methods(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--config",
        "--data-dir",
        "--task",
        "--langs",
        "--methods",
        "--n-way",
        "--k-shot",
        "--q-query",
        "--episodes",
        "--seed",
        "--out",
    ):
        assert flag in text
    from xmeta.bench.methods import METHODS

    for method in ("frozen-proto", "finetune", "meta:<run dir>", "icl[:<llm>]", "icl0", "external:<file>"):
        assert method in text
    for method in ("logreg[:<encoder>]", "setfit[:<encoder>]", "icl:openai:<model>", "missing_predictions"):
        assert method in text
    assert all(METHODS.get(name).form in text for name in METHODS)  # the registry is the list
    line = next(line for line in text.splitlines() if "fake-cli-opts[:<size>]" in line)
    assert line.split() == ["fake-cli-opts[:<size>]", *"test fake registered from outside, with options".split()]


def test_shipped_configs_load_and_open_with_the_command() -> None:
    lowres = load_config(BenchConfig, ROOT / "eval/configs/sib200_lowres.yaml")
    assert len(lowres.langs) == 25 and lowres.k_shot == [1, 5, 10] and lowres.n_way == 7 and lowres.q_query == 5
    assert lowres.episodes_per_lang == 20 and lowres.seed == 0
    assert lowres.methods[:2] == ["frozen-proto", "logreg"] and all(
        m.startswith(("meta:", "meta-ens:")) for m in lowres.methods[2:]
    )
    costly = load_config(BenchConfig, ROOT / "eval/configs/sib200_lowres_costly.yaml")
    assert set(costly.langs) < set(lowres.langs) and {"finetune", "icl:gemma-3-270m"} <= set(costly.methods)
    peers = load_config(BenchConfig, ROOT / "eval/configs/sib200_lowres_peers.yaml")
    assert peers.langs == costly.langs and peers.episodes_per_lang == 1  # episode 0 of the same languages
    assert {"setfit", "logreg", "icl:openai:gemma-3-270m", "meta:eval/results/meta_runs/protonet"} <= set(peers.methods)
    for name in ("sib200_lowres", "sib200_lowres_costly", "sib200_lowres_peers", "smoke"):
        first = (ROOT / f"eval/configs/{name}.yaml").read_text().splitlines()
        assert first[0].startswith("#") and any("xmeta bench --config eval/configs/" in line for line in first[:3])


def test_yaml_then_overrides_then_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "b.yaml"
    cfg_file.write_text("langs: [swh_Latn]\nmethods: [frozen-proto]\nk_shot: 5\nseed: 3\nbootstrap: 500\n")
    args = parse(
        [
            "--config",
            str(cfg_file),
            "seed=4",
            "bootstrap=700",
            "--seed",
            "9",
            "--k-shot",
            "1,5,10",
            "--langs",
            "yor_Latn,hau_Latn",
            "--methods",
            "icl:gemma-3-270m,meta:runs/x",
            "--episodes",
            "7",
            "--n-way",
            "5",
            "--q-query",
            "3",
            "--out",
            str(tmp_path / "o"),
            "--data-dir",
            "/d",
            "--task",
            "afrisenti",
        ]
    )
    cfg = load_bench_config(args)
    assert cfg.seed == 9 and cfg.bootstrap == 700 and cfg.k_shot == [1, 5, 10] and cfg.episodes_per_lang == 7
    assert cfg.langs == ["yor_Latn", "hau_Latn"] and cfg.methods == ["icl:gemma-3-270m", "meta:runs/x"]
    assert (cfg.n_way, cfg.q_query, cfg.out, cfg.data_dir, cfg.task) == (5, 3, str(tmp_path / "o"), "/d", "afrisenti")
    # A scalar K in YAML is one K.
    assert load_bench_config(parse(["--config", str(cfg_file)])).k_shot == [5]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-way", "1"], "n_way must be >= 2"),
        (["--k-shot", "0"], "k_shot"),
        (["--episodes", "0"], "episodes_per_lang"),
        (["--methods", "frozen-protoo"], "Did you mean 'frozen-proto'"),
        (["--methods", "meta"], "meta:<...>"),
        (["--methods", "frozen-proto:x"], "takes no argument"),
        (["--langs", "swh_Latn,swh_Latn"], "twice"),
        (["k_shots=5"], "Did you mean 'k_shot'"),
        (["method_options={icll: {}}"], "unknown method kind"),
        (["method_options={fake-cli-opt: {}}"], "Did you mean 'fake-cli-opts'"),
        (["method_options={fake-cli-opts: {kk: 1}}"], "Unknown fake-cli-opts option 'kk'. Did you mean 'k'?"),
        (["method_options={fake-cli-opts: {k: many}}"], "method_options.fake-cli-opts.k: expected int"),
        (["method_options={frozen-proto: {distanse: cosine}}"], "Did you mean 'distance'"),
        (["ci=1.5"], "ci must be"),
    ],
)
def test_bad_values_are_refused_before_any_work(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_work(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the benchmark started despite a bad config")

    monkeypatch.setattr("xmeta.bench.runner.run_bench", no_work)
    base = ["--langs", "swh_Latn", "--methods", "frozen-proto", "--out", str(tmp_path / "o")]
    assert main(["bench", *base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("xmeta bench: error:")
    assert not (tmp_path / "o").exists()


def test_bad_method_options_are_refused_before_episodes_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "bench",
        "--data-dir",
        str(data_dir),
        "--langs",
        "swh_Latn",
        "--methods",
        "fake-cli,finetune",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
        "method_options={finetune: {stepz: 3}}",
    ]
    assert main(argv) == 2
    assert "Did you mean 'steps'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cells").exists()


def test_cli_end_to_end_on_real_data(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = [
        "bench",
        "--data-dir",
        str(data_dir),
        "--langs",
        "swh_Latn,yor_Latn",
        "--methods",
        "fake-cli",
        "--k-shot",
        "1,2",
        "--q-query",
        "2",
        "--episodes",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "bootstrap=200",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "K=1 fake-cli: 14.3" in text and "K=2 fake-cli: 14.3" in text
    res = json.loads((out / "results.json").read_text())
    assert res["k_shot"] == [1, 2] and res["config"]["bootstrap"] == 200
    resolved = load_config(BenchConfig, out / "config.yaml")
    assert resolved.langs == ["swh_Latn", "yor_Latn"] and resolved.k_shot == [1, 2]
    for name in ("results.md", "accuracy_by_lang_k1.png", "accuracy_by_lang_k2.png", "accuracy_vs_k.png"):
        assert (out / name).stat().st_size > 0


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="q_query"):
        load_config(BenchConfig, None, ["langs=swh_Latn", "q_query=0"])
    with pytest.raises(ValueError, match="langs must list"):
        BenchConfig(langs=[])
