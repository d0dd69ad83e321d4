"""Bad input: each problem is one InputError naming the file and line (or the language); nothing silently dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from xmeta.data import load_task
from xmeta.errors import InputError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XMETA_DATA_DIR", raising=False)


def sib_tree(root: Path, dev_text: str | None = None) -> Path:
    d = root / "sib200" / "annotated" / "eng_Latn"
    d.mkdir(parents=True)
    good = "index_id\tcategory\ttext\n1\thealth\tone\n2\tsports\ttwo\n"
    for split in ("train", "dev", "test"):
        (d / f"{split}.tsv").write_text(good, encoding="utf-8")
    if dev_text is not None:
        (d / "dev.tsv").write_text(dev_text, encoding="utf-8")
    return d


def one_file(tmp_path: Path, content: str, name: str = "x.tsv", **kw):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return load_task("files", files=[f"eng_Latn:train={path}"], **kw), path


def test_missing_file_names_it(tmp_path):
    d = sib_tree(tmp_path)
    (d / "test.tsv").unlink()
    with pytest.raises(
        InputError, match=r"eng_Latn/test\.tsv: file not found \(sib200, language 'eng_Latn', split 'test'\)"
    ):
        load_task("sib200", data_dir=tmp_path)
    with pytest.raises(InputError, match=r"nope\.tsv: file not found"):
        load_task("files", files=[f"eng_Latn:train={tmp_path / 'nope.tsv'}"])


def test_malformed_row_wrong_column_count(tmp_path):
    sib_tree(tmp_path, "index_id\tcategory\ttext\n1\thealth\tone\n2\tsports\n")
    with pytest.raises(
        InputError, match=r"dev\.tsv:3: expected 3 fields \(index_id, category, text\), got 2: '2\\tsports'"
    ):
        load_task("sib200", data_dir=tmp_path)


def test_empty_text(tmp_path):
    sib_tree(tmp_path, "index_id\tcategory\ttext\n1\thealth\tone\n2\tsports\t  \n")
    with pytest.raises(InputError, match=r"dev\.tsv:3: empty text in column 'text'"):
        load_task("sib200", data_dir=tmp_path)


def test_unknown_label_value(tmp_path):
    sib_tree(tmp_path, "index_id\tcategory\ttext\n1\thealth\tone\n2\tsport\ttwo\n")
    with pytest.raises(
        InputError, match=r"dev\.tsv:3: unknown label 'sport' in column 'category' \(known: entertainment"
    ):
        load_task("sib200", data_dir=tmp_path)


def test_duplicate_id(tmp_path):
    sib_tree(tmp_path, "index_id\tcategory\ttext\n1\thealth\tone\n1\tsports\ttwo\n")
    with pytest.raises(InputError, match=r"dev\.tsv:3: duplicate id '1' in column 'index_id' \(first on line 2\)"):
        load_task("sib200", data_dir=tmp_path)


def test_unknown_label_column_with_suggestion(tmp_path):
    with pytest.raises(
        InputError, match=r"x\.tsv:1: no column 'lable' in the header \(columns: text, label\)\. Did you mean 'label'\?"
    ):
        one_file(tmp_path, "text\tlabel\na\tp\nb\tq\n", label_column="lable")


def test_language_not_present(tmp_path):
    sib_tree(tmp_path)
    with pytest.raises(
        InputError, match=r"language 'eng_Latm' is not present in sib200 at .* Did you mean 'eng_Latn'\?"
    ):
        load_task("sib200", data_dir=tmp_path, langs=["eng_Latm"])


def test_unknown_split(tmp_path):
    sib_tree(tmp_path)
    with pytest.raises(InputError, match="Unknown split 'tets'. Did you mean 'test'"):
        load_task("sib200", data_dir=tmp_path, splits=["tets"])


def test_empty_file_and_bad_jsonl(tmp_path):
    with pytest.raises(InputError, match=r"x\.tsv: empty file; expected a header line naming the columns text, label"):
        one_file(tmp_path, "")
    with pytest.raises(InputError, match=r"x\.jsonl:2: not valid JSON"):
        one_file(tmp_path, '{"text": "a", "label": "p"}\n{"text": "b", label: q}\n', name="x.jsonl")
    with pytest.raises(
        InputError, match=r"y\.jsonl:1: no key 'label' in this record \(keys: text, labl\)\. Did you mean 'labl'"
    ):
        one_file(tmp_path, '{"text": "a", "labl": "p"}\n', name="y.jsonl")


def test_bad_csv_quoting_and_encoding(tmp_path):
    with pytest.raises(InputError, match=r"x\.csv:2: expected 2 fields"):
        one_file(tmp_path, 'text,label\n"a, b" c,p,extra\n', name="x.csv")
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"text\tlabel\nok\tp\n\xff\xfe\tq\n")
    with pytest.raises(InputError, match=r"bad\.tsv:3: not valid UTF-8"):
        load_task("files", files=[f"eng_Latn:train={bad}"])


def test_unknown_suffix_and_bad_spec(tmp_path):
    with pytest.raises(InputError, match=r"cannot tell the format from the suffix '\.txt'"):
        one_file(tmp_path, "text\tlabel\na\tp\n", name="x.txt")
    with pytest.raises(InputError, match="write LANG:SPLIT=PATH"):
        load_task("files", files=["just_a_file.tsv"])


def test_skip_bad_rows_logs_the_count(tmp_path, caplog):
    content = "text\tlabel\na\tp\n\tq\nb\tq\nc\tzzz\n\n"
    with caplog.at_level(logging.WARNING, logger="xmeta.data"):
        ds, path = one_file(tmp_path, content, skip_bad_rows=True, label_names=["p", "q"])
    assert ds["text"] == ["a", "b"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 bad row(s)" in messages and f"{path}:3: empty text" in messages
    assert "skipped 1 blank line(s)" in messages


def test_blank_lines_are_counted_not_silent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="xmeta.data"):
        ds, _ = one_file(tmp_path, "text\tlabel\na\tp\n\nb\tq\n\n")
    assert len(ds) == 2
    assert any("skipped 2 blank line(s)" in r.getMessage() for r in caplog.records)
