"""Corpora -> datasets: schema, label ids, uids, data-dir resolution, hub path, cache (tiny files + real data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmeta.data import load_task, task_names
from xmeta.data import sib200 as sib
from xmeta.data.cache import cache_root
from xmeta.errors import InputError
from xmeta.registry import UnknownNameError

# labels.txt in upstream (unsorted) order; the tiny corpora use only three of the seven.
LABELS_TXT = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]
LABELS = ["travel", "health", "sports"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XMETA_DATA_DIR", raising=False)


def write_sib(root: Path, langs=("eng_Latn", "swh_Latn"), per_class=3) -> Path:
    """A tiny SIB-200 tree: <root>/sib200/annotated/<lang>/{train,dev,test}.tsv, parallel index ids."""
    annotated = root / "sib200" / "annotated"
    for lang in langs:
        d = annotated / lang
        d.mkdir(parents=True)
        (d / "labels.txt").write_text("\n".join(LABELS_TXT) + "\n", encoding="utf-8")
        idx = 0
        for split in ("train", "dev", "test"):
            lines = ["index_id\tcategory\ttext"]
            for label in LABELS:
                for _ in range(per_class):
                    idx += 1
                    lines.append(f'{idx}\t{label}\t{lang} "{label}" sentence {idx}')
            (d / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return annotated


def test_sib200_schema_labels_and_uids(tmp_path):
    write_sib(tmp_path)
    ds = load_task("sib200", data_dir=tmp_path)
    assert ds.column_names == ["uid", "text", "label", "label_name", "lang", "split", "source_id"]
    assert len(ds) == 2 * 3 * 9
    # Fixed, sorted label order: ids agree across languages.
    assert ds.features["label"].names == sorted(LABELS_TXT) == list(sib.LABELS)
    row = ds.filter(lambda r: r["uid"] == "sib200:swh_Latn:test:19")[0]
    assert row["label_name"] == "travel" and row["label"] == sorted(LABELS_TXT).index("travel")
    assert row["source_id"] == "sib200:19" and row["split"] == "test" and row["lang"] == "swh_Latn"
    # Quoted text survives as written (no CSV quote stripping of inner quotes).
    assert row["text"] == 'swh_Latn "travel" sentence 19'
    for r in ds:
        assert r["label_name"] == ds.features["label"].names[r["label"]]


def test_sib200_select_langs_splits_and_aliases(tmp_path):
    write_sib(tmp_path)
    ds = load_task("sib200", data_dir=tmp_path, langs="swh_Latn", splits=["validation"])
    assert set(ds["lang"]) == {"swh_Latn"} and set(ds["split"]) == {"dev"} and len(ds) == 9


@pytest.mark.parametrize("sub", ["", "sib200", "sib200/annotated"])
def test_data_dir_may_point_at_any_level(tmp_path, sub):
    write_sib(tmp_path)
    assert len(load_task("sib200", data_dir=tmp_path / sub, langs=["eng_Latn"])) == 27


def test_env_var_is_used_and_explicit_arg_wins(tmp_path, monkeypatch):
    write_sib(tmp_path / "a", langs=("eng_Latn",))
    write_sib(tmp_path / "b", langs=("swh_Latn",))
    monkeypatch.setenv("XMETA_DATA_DIR", str(tmp_path / "a"))
    assert set(load_task("sib200")["lang"]) == {"eng_Latn"}
    assert set(load_task("sib200", data_dir=tmp_path / "b")["lang"]) == {"swh_Latn"}


def test_not_found_says_how_to_get_sib200(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"SIB-200 not found under .*github.com/dadelani/sib-200.*Davlan/sib200"):
        load_task("sib200", data_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="XMETA_DATA_DIR is not set.*github.com/dadelani/sib-200"):
        load_task("sib200")


def test_unknown_task_did_you_mean():
    assert {"sib200", "afrisenti", "files"} <= set(task_names())
    with pytest.raises(UnknownNameError, match="Did you mean 'sib200'"):
        load_task("sib-200")


def _fake_hub(annotated: Path):
    """Stand-ins for datasets.get_dataset_config_names / load_dataset serving the local TSVs in hub shape."""
    import datasets

    def config_names(repo, revision=None):
        assert repo == sib.HUB_ID
        return sorted(p.name for p in annotated.iterdir())

    def load_dataset(repo, name=None, revision=None, **kw):
        assert repo == sib.HUB_ID
        out = {}
        for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test")):
            lines = (annotated / name / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
            rows = [line.split("\t") for line in lines]
            out[hub_split] = datasets.Dataset.from_dict(
                {"index_id": [int(r[0]) for r in rows], "category": [r[1] for r in rows], "text": [r[2] for r in rows]}
            )
        return datasets.DatasetDict(out)

    return config_names, load_dataset


def test_hub_path_gives_the_same_dataset(tmp_path, monkeypatch):
    import datasets

    annotated = write_sib(tmp_path)
    config_names, fake_load = _fake_hub(annotated)
    monkeypatch.setattr(datasets, "get_dataset_config_names", config_names)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    local = load_task("sib200", data_dir=tmp_path, source="local")
    hub = load_task("sib200", source="hub")
    assert hub.features == local.features
    key = lambda r: r["uid"]  # noqa: E731
    assert sorted(hub.to_list(), key=key) == sorted(local.to_list(), key=key)
    # "auto" with no data dir and not offline goes to the hub.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert len(load_task("sib200", langs=["eng_Latn"])) == 27


def test_hub_script_repo_falls_back_to_parquet_export(tmp_path, monkeypatch):
    import datasets

    annotated = write_sib(tmp_path, langs=("eng_Latn",))
    config_names, fake_load = _fake_hub(annotated)
    calls = []

    def load_dataset(repo, name=None, revision=None, data_dir=None, **kw):
        calls.append((name, revision, data_dir))
        if revision != "refs/convert/parquet":
            raise RuntimeError("Dataset scripts are no longer supported, but found sib200.py")
        return fake_load(repo, data_dir)

    monkeypatch.setattr(datasets, "get_dataset_config_names", config_names)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert len(load_task("sib200", source="hub")) == 27
    assert calls[-1] == (None, "refs/convert/parquet", "eng_Latn")


def test_hub_unreachable_is_an_input_error(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "get_dataset_config_names", boom)
    with pytest.raises(InputError, match="could not load SIB-200 from the hub.*github.com/dadelani"):
        load_task("sib200", source="hub")


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    from xmeta.data import readers, tasks

    monkeypatch.setattr(tasks, "CACHE_MIN_BYTES", 0)  # cache even this tiny corpus
    annotated = write_sib(tmp_path)
    first = load_task("sib200", data_dir=tmp_path)
    assert any(cache_root().glob("sib200-*"))

    def no_parsing(*a, **k):
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(tasks, "read_rows", no_parsing)
    assert load_task("sib200", data_dir=tmp_path).to_list() == first.to_list()
    # Editing a file changes the fingerprint: parsed again, with the new row.
    monkeypatch.setattr(tasks, "read_rows", readers.read_rows)
    path = annotated / "eng_Latn" / "dev.tsv"
    path.write_text(path.read_text(encoding="utf-8") + "999\thealth\tnew row\n", encoding="utf-8")
    assert len(load_task("sib200", data_dir=tmp_path)) == len(first) + 1
    assert (
        load_task("sib200", data_dir=tmp_path, cache=False).to_list()
        == load_task("sib200", data_dir=tmp_path).to_list()
    )


def write_afrisenti(root: Path) -> Path:
    base = root / "afrisenti"
    for lang, n in (("hau", 4), ("orm", 4)):
        (base / lang).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            lines = ["tweet\tlabel"]
            if not (lang == "orm" and split == "train"):  # header-only, like the real orm/tir
                lines += [
                    f"{lang} {split} tweet {i}\t{['positive', 'negative', 'neutral'][i % 3]}" for i in range(n * 3)
                ]
            (base / lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return base


def test_afrisenti_codes_labels_and_empty_train(tmp_path):
    write_afrisenti(tmp_path)
    ds = load_task("afrisenti", data_dir=tmp_path, langs=["hau", "orm_Latn"])
    assert "source_id" not in ds.column_names
    assert ds.features["label"].names == ["negative", "neutral", "positive"]
    assert set(ds["lang"]) == {"hau_Latn", "orm_Latn"}
    assert not [u for u in ds["uid"] if u.startswith("afrisenti:orm_Latn:train")]
    assert ds[0]["uid"] == "afrisenti:hau_Latn:train:0" and ds[0]["label_name"] == "positive"


def test_user_files_tsv_csv_jsonl(tmp_path):
    (tmp_path / "a.tsv").write_text("sentence\ttopic\nhello there\tgreet\nbye now\tfarewell\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text('sentence,topic\n"hi, you",greet\nciao,farewell\n', encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"sentence": s, "topic": t}) for s, t in [("moin", "greet"), ("tschüss", "other")]) + "\n",
        encoding="utf-8",
    )
    ds = load_task(
        "files",
        files=[
            f"xyz_Latn:train={tmp_path / 'a.tsv'}",
            f"xyz_Latn:dev={tmp_path / 'b.csv'}",
            f"deu_Latn:test={tmp_path / 'c.jsonl'}",
        ],
        text_column="sentence",
        label_column="topic",
    )
    assert ds.features["label"].names == ["farewell", "greet", "other"]
    assert ds["uid"] == [
        "files:xyz_Latn:train:0",
        "files:xyz_Latn:train:1",
        "files:xyz_Latn:dev:0",
        "files:xyz_Latn:dev:1",
        "files:deu_Latn:test:0",
        "files:deu_Latn:test:1",
    ]
    assert ds[2]["text"] == "hi, you"


def test_user_files_layout_and_parallel_ids(tmp_path):
    for lang in ("aaa_Latn", "bbb_Latn"):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "train.tsv").write_text("id\ttext\tlabel\n7\tx\tpos\n8\ty\tneg\n", encoding="utf-8")
    ds = load_task("files", data_dir=tmp_path, id_column="id", uid_prefix="mine")
    assert ds["uid"][:2] == ["mine:aaa_Latn:train:7", "mine:aaa_Latn:train:8"]
    assert ds["source_id"] == ["mine:7", "mine:8", "mine:7", "mine:8"]


@pytest.mark.slow
def test_real_sib200_single_language(data_dir):
    ds = load_task("sib200", data_dir=data_dir, langs=["swh_Latn"])
    assert len(ds) == 701 + 99 + 204
    assert ds.features["label"].names == list(sib.LABELS)
    assert {s: ds["split"].count(s) for s in ("train", "dev", "test")} == {"train": 701, "dev": 99, "test": 204}
