"""Support-set validation of ``xmeta adapt``: every bad input is one InputError line naming where."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from xmeta.adaptation.support import build_support, load_support, raw_from_python, read_support_file
from xmeta.adaptation.texts import read_texts
from xmeta.errors import InputError
from xmeta.interfaces import Example


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


PAIRS = [("goal team", "sport"), ("doctor pill", "health"), ("ball match", "sport"), ("fever clinic", "health")]


def test_pairs_examples_and_files_agree(tmp_path):
    tsv = write(tmp_path / "s.tsv", "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in PAIRS))
    csv = write(tmp_path / "s.csv", "label,text\n" + "".join(f"{lab},{t}\n" for t, lab in PAIRS))
    jsonl = write(tmp_path / "s.jsonl", "".join(f'{{"text": "{t}", "label": "{lab}"}}\n' for t, lab in PAIRS))
    examples = [Example(str(i), t, 0, lab) for i, (t, lab) in enumerate(PAIRS)]
    sets = [load_support(s, lang="xxx_Latn") for s in (PAIRS, examples, tsv, csv, jsonl)]
    for s in sets:
        assert s.label_names == ("health", "sport")  # sorted, whatever the row order
        assert [(e.text, e.label, e.label_name) for e in s.examples] == [
            (t, ("health", "sport").index(lab), lab) for t, lab in PAIRS
        ]
        assert s.stats["per_class"] == {"health": 2, "sport": 2} and s.lang == "xxx_Latn"


def test_declared_labels_set_the_order_and_catch_typos():
    s = load_support(PAIRS, labels=["sport", "health"])
    assert s.label_names == ("sport", "health") and s.examples[0].label == 0
    with pytest.raises(InputError, match=r"support\[1\]: label 'health' is not one of sport, helth. Did you mean"):
        load_support(PAIRS, labels=["sport", "helth"])
    with pytest.raises(InputError, match=r"label\(s\) 'money' have no example"):
        load_support(PAIRS, labels=["sport", "health", "money"])


def test_one_class_is_refused(tmp_path):
    path = write(tmp_path / "one.tsv", "text\tlabel\na b\tsport\nc d\tsport\n")
    with pytest.raises(InputError, match=r"one.tsv: found only the label 'sport'; adaptation needs at least 2 classes"):
        load_support(path)


def test_a_label_left_without_examples_after_dropping_empty_texts(tmp_path, caplog):
    path = write(tmp_path / "s.tsv", "text\tlabel\na b\tsport\n  \thealth\n\t health\nc\tsport\n")
    with pytest.raises(InputError, match=r"found only the label 'sport' after dropping 2 empty text\(s\)"):
        load_support(path)


def test_empty_texts_are_dropped_with_a_count(tmp_path, caplog):
    path = write(tmp_path / "s.tsv", "text\tlabel\na b\tsport\n   \tsport\nc d\thealth\n")
    with caplog.at_level(logging.WARNING):
        s = load_support(path)
    assert len(s.examples) == 2 and s.stats["dropped_empty"] == 1
    assert "dropped 1 empty or whitespace-only text(s)" in caplog.text


def test_duplicates_are_dropped_and_reported_and_conflicts_refused(tmp_path, caplog):
    path = write(tmp_path / "s.tsv", "text\tlabel\na b\tsport\nc d\thealth\na b \tsport\n")
    with caplog.at_level(logging.WARNING):
        s = load_support(path)
    assert len(s.examples) == 2 and s.stats["dropped_duplicates"] == 1
    assert f"dropped 1 duplicate row(s) (same text and label as an earlier row): {path}:4" in caplog.text
    bad = write(tmp_path / "bad.tsv", "text\tlabel\na b\tsport\nc d\thealth\na b\thealth\n")
    with pytest.raises(InputError, match=r"bad.tsv:4: text 'a b' is labelled 'health' here but 'sport' at .*bad.tsv:2"):
        load_support(bad)


def test_empty_label_is_an_error(tmp_path):
    path = write(tmp_path / "s.csv", "text,label\na b,sport\nc d,\n")
    with pytest.raises(InputError, match=r"s.csv:3: empty label for text 'c d'"):
        load_support(path)


def test_missing_and_unknown_columns(tmp_path):
    path = write(tmp_path / "s.tsv", "sentence\tlabel\na\tx\n")
    with pytest.raises(InputError, match=r"s.tsv:1: no column 'text' in the header \(columns: sentence, label\)"):
        load_support(path)
    with pytest.raises(InputError, match=r"no column 'topic'.*Did you mean"):
        read_support_file(write(tmp_path / "t.tsv", "text\ttopik\na\tx\n"), label_column="topic")
    with pytest.raises(InputError, match=r"both 'text'"):
        read_support_file(path, label_column="text")
    jsonl = write(tmp_path / "s.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(InputError, match=r"s.jsonl:2: no key 'label'"):
        load_support(jsonl)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "s.tsv", b"text\tlabel\na\tx\n\xff\xfe bad\ty\n")
    with pytest.raises(InputError, match=r"s.tsv:3: not valid UTF-8"):
        load_support(path)
    txt = write(tmp_path / "in.txt", b"ok\n\xc3\x28\n")
    with pytest.raises(InputError, match=r"in.txt:2: not valid UTF-8"):
        read_texts(txt)


def test_max_per_class_subsamples_deterministically(caplog):
    pairs = [(f"s{i}", "sport") for i in range(10)] + [(f"h{i}", "health") for i in range(3)]
    with caplog.at_level(logging.WARNING):
        a = load_support(pairs, max_per_class=4, seed=3)
    assert "more than 4 examples for 1 label(s)" in caplog.text and "{'sport': 6}" in caplog.text
    b = load_support(list(reversed(pairs)), max_per_class=4, seed=3)
    c = load_support(pairs, max_per_class=4, seed=4)
    texts = [e.text for e in a.examples]
    assert a.stats["per_class"] == {"health": 3, "sport": 4} and a.stats["subsampled"] == {"sport": 6}
    assert texts == sorted(texts, key=lambda t: [p[0] for p in pairs].index(t))  # input order kept
    assert {e.text for e in b.examples} == set(texts)  # the choice does not depend on row order
    assert {e.text for e in c.examples} != set(texts)
    assert len(load_support(pairs, max_per_class=None).examples) == 13
    with pytest.raises(InputError, match="max_per_class must be >= 1"):
        load_support(pairs, max_per_class=0)


def test_bad_python_items_and_bad_lang():
    with pytest.raises(InputError, match=r"support\[1\]: expected a \(text, label\) pair"):
        raw_from_python([("a", "x"), "b"])
    with pytest.raises(InputError, match=r"support\[0\]: text must be a string"):
        raw_from_python([(3, "x")])
    with pytest.raises(InputError, match="no examples"):
        build_support([])
    with pytest.raises(InputError, match="language code must be a non-empty word"):
        load_support(PAIRS, lang="swh Latn")
    assert load_support([("a", 1), ("b", 2)]).label_names == ("1", "2")  # int labels are names too


def test_read_texts_formats(tmp_path):
    assert read_texts(write(tmp_path / "a.txt", "one\n\ntwo \r\nthree\n")) == ["one", "two ", "three"]
    assert read_texts(write(tmp_path / "noext", "x\ny\n")) == ["x", "y"]
    assert read_texts(write(tmp_path / "a.tsv", "id\ttext\n1\tx\n2\t\n3\ty\n")) == ["x", "y"]
    assert read_texts(write(tmp_path / "a.csv", 'text,id\n"a, b",1\n'), fmt="auto") == ["a, b"]
    assert read_texts(write(tmp_path / "a.jsonl", '{"sentence": "z"}\n'), text_column="sentence") == ["z"]
    assert read_texts(write(tmp_path / "a.dat", "text\tid\nq\t1\n"), fmt="tsv") == ["q"]
    with pytest.raises(InputError, match=r"a.tsv:1: no column 'sentence'"):
        read_texts(tmp_path / "a.tsv", text_column="sentence")
    with pytest.raises(InputError, match="file not found"):
        read_texts(tmp_path / "missing.txt")
