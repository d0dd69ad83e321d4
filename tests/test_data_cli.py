"""`xmeta episodes` on the real SIB-200 and AfriSenti files, plus its error reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from xmeta.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path / "cache"))


def run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_sib200_episodes(capsys, data_dir):
    argv = ["episodes", "--task", "sib200", "--langs", "swh_Latn", "--n-way", "7", "--k-shot", "5", "--q-query", "5"]
    argv += ["--support-split", "dev", "--query-split", "test", "--seed", "0", "--data-dir", str(data_dir)]
    code, episodes, _ = run(capsys, *argv, "--episodes", "3")
    assert code == 0 and [e["episode"] for e in episodes] == [0, 1, 2]
    for ep in episodes:
        assert ep["lang"] == ep["query_lang"] == "swh_Latn" and len(ep["label_names"]) == 7
        assert len(ep["support"]) == 35 and len(ep["query"]) == 35
        assert Counter(e["label"] for e in ep["support"]) == dict.fromkeys(range(7), 5)
        assert set(ep["support"][0]) == {"uid", "text", "label", "label_name"}
        assert all(e["uid"].startswith("sib200:swh_Latn:dev:") for e in ep["support"])
        assert all(e["uid"].startswith("sib200:swh_Latn:test:") for e in ep["query"])
        assert all(ep["label_names"][e["label"]] == e["label_name"] for e in ep["support"] + ep["query"])
    # Episode 2 alone (--start 2) is the third episode of the longer run.
    code, again, _ = run(capsys, *argv, "--episodes", "1", "--start", "2")
    assert again == episodes[2:]


def test_sib200_cross_lingual_and_all_queries(capsys, data_dir):
    code, episodes, _ = run(
        capsys, "episodes", "--langs", "eng_Latn", "--query-lang", "yor_Latn", "--n-way", "3", "--k-shot", "2",
        "--q-query", "all", "--data-dir", str(data_dir),
    )  # fmt: skip
    ep = episodes[0]
    assert code == 0 and ep["lang"] == "eng_Latn" and ep["query_lang"] == "yor_Latn" and len(ep["support"]) == 6
    assert all(e["uid"].startswith("sib200:yor_Latn:test:") for e in ep["query"]) and len(ep["query"]) > 20


def test_afrisenti_episodes_accept_short_codes(capsys, data_dir):
    code, episodes, _ = run(
        capsys, "episodes", "--task", "afrisenti", "--langs", "hau,yor", "--k-shot", "4", "--q-query", "3",
        "--episodes", "2", "--data-dir", str(data_dir),
    )  # fmt: skip
    assert code == 0 and [(e["lang"], e["episode"]) for e in episodes] == [
        ("hau_Latn", 0), ("hau_Latn", 1), ("yor_Latn", 0), ("yor_Latn", 1),
    ]  # fmt: skip
    assert all(e["label_names"] == ["negative", "neutral", "positive"] for e in episodes)
    assert all(len(e["support"]) == 12 and len(e["query"]) == 9 for e in episodes)


def test_user_files(capsys, tmp_path):
    for split in ("dev", "test"):
        rows = [f"{w} {i}\t{w}" for i in range(4) for w in ("ja", "nein")]
        (tmp_path / f"{split}.tsv").write_text("satz\tantwort\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, episodes, _ = run(
        capsys, "episodes", "--task", "files", "--langs", "deu_Latn", "--file", f"deu_Latn:dev={tmp_path / 'dev.tsv'}",
        "--file", f"deu_Latn:test={tmp_path / 'test.tsv'}", "--text-column", "satz", "--label-column", "antwort",
        "--k-shot", "2", "--q-query", "2",
    )  # fmt: skip
    assert code == 0 and episodes[0]["label_names"] == ["ja", "nein"] and len(episodes[0]["query"]) == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "sib20"], "Unknown task 'sib20'. Did you mean 'sib200'?"),
        (["--langs", "swh_Latm"], "language 'swh_Latm' is not present in sib200"),
        (["--k-shot", "40"], "class 'entertainment': swh_Latn/dev has 9 examples (needs 40)"),
        (["--q-query", "lots"], "--q-query must be an integer or 'all'"),
        (
            ["--task", "afrisenti", "--langs", "orm", "--support-split", "train"],
            "language 'orm_Latn' has no examples in split 'train'",
        ),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, data_dir, extra, message):
    argv = ["episodes", "--langs", "swh_Latn", "--data-dir", str(data_dir)]
    code, out, err = run(capsys, *argv, *extra)
    assert code == 2 and out == [] and message in err and "Traceback" not in err


def test_help_and_module_entry_point(data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "xmeta.cli", "episodes", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--k-shot" in proc.stdout and "examples:" in proc.stdout and "LANG:SPLIT=PATH" in proc.stdout
