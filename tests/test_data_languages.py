"""Language metadata: coverage of SIB-200, the documented tier rule, unknown codes, meta-training picks."""

from __future__ import annotations

import csv

import pytest

from xmeta.data.languages import (
    LANGUAGE_SETS,
    TIERS,
    derive_tier,
    expand_languages,
    high_resource_languages,
    language_info,
    language_set,
    language_set_names,
    language_table,
    languages_in_tier,
    script_of_code,
    tier_of,
)


def test_every_row_follows_the_documented_tier_rule():
    table = language_table()
    assert len(table) >= 184
    for lang in table.values():
        assert lang.tier == derive_tier(lang.joshi_class, lang.in_xlmr), lang
        assert lang.script == script_of_code(lang.code)
        assert lang.joshi_class is None or 0 <= lang.joshi_class <= 5
        assert lang.tier in TIERS and lang.name


def test_known_examples():
    assert language_info("eng_Latn").tier == "high" and language_info("eng_Latn").joshi_class == 5
    assert language_info("swh_Latn").name == "Swahili" and tier_of("swh_Latn") == "mid"
    assert tier_of("yor_Latn") == "low"  # not in XLM-R's pretraining languages
    assert language_info("hau").code == "hau_Latn"  # bare ISO code resolves when unambiguous


def test_unknown_codes_still_work():
    info = language_info("xyz_Cyrl")
    assert (info.tier, info.script, info.name) == ("unknown", "Cyrl", "xyz_Cyrl")
    assert language_info("zho").tier == "unknown"  # ambiguous: zho_Hans and zho_Hant
    assert script_of_code("qqq") == "Zzzz"


def test_high_resource_languages_exclude_order_and_available():
    picks = high_resource_languages(n=10)
    assert len(picks) == 10 and all(tier_of(c) == "high" for c in picks)
    classes = [language_info(c).joshi_class for c in picks]
    assert classes == sorted(classes, reverse=True) and classes[0] == 5  # best-resourced first
    assert "eng_Latn" not in high_resource_languages(exclude=["eng_Latn"])
    assert not {"zho_Hans", "zho_Hant"} & set(high_resource_languages(exclude=["zho"]))
    assert high_resource_languages(available=["swh_Latn", "fra_Latn", "new_Latn"]) == ["fra_Latn"]
    assert languages_in_tier("low", available=["yor_Latn", "eng_Latn", "xyz_Latn"]) == ["yor_Latn"]
    with pytest.raises(ValueError, match="unknown tier"):
        languages_in_tier("huge")


def test_covers_every_sib200_language_present_and_matches_published_in_xlmr(data_dir):
    annotated = data_dir / "sib200" / "annotated"
    present = sorted(p.name for p in annotated.iterdir() if p.is_dir())
    table = language_table()
    assert [c for c in present if c not in table] == []
    with open(data_dir / "sib200" / "published_results.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            assert table[row["lang"]].in_xlmr == bool(int(float(row["in_xlmr"]))), row["lang"]


def test_tier_names_expand_to_the_tier_best_resourced_first():
    assert language_set("tier:high") == high_resource_languages() and len(high_resource_languages()) == 50
    for tier in ("high", "mid", "low"):
        codes = language_set(f"tier:{tier}")
        assert codes and sorted(codes) == languages_in_tier(tier)
        classes = [language_info(c).joshi_class or 0 for c in codes]
        assert classes == sorted(classes, reverse=True)
    assert "tier:unknown" not in language_set_names()  # the table lists no code of tier unknown


def test_named_sets_are_disjoint_where_the_protocol_needs_it():
    train, val = set(LANGUAGE_SETS["train:hr10"]), set(LANGUAGE_SETS["val:african5"])
    evaluation = set(LANGUAGE_SETS["eval:lowres25"])
    assert len(train) == 10 and len(val) == 5 and len(evaluation) == 25
    assert not (train | set(language_set("tier:high"))) & (val | evaluation) and not val & evaluation
    assert LANGUAGE_SETS["eval:lowres10"] == LANGUAGE_SETS["eval:lowres25"][:10]
    wide = LANGUAGE_SETS["val:wide74"]
    assert len(set(wide)) == len(wide) == 74 and wide[:5] == LANGUAGE_SETS["val:african5"]
    assert not set(wide) & (evaluation | set(language_set("tier:high")))  # never an evaluation or training language
    assert all(tier_of(c) == "low" for c in wide)


def test_expand_languages_replaces_names_and_keeps_codes_in_order():
    assert expand_languages(["swh_Latn", "xyz_Latn"]) == ["swh_Latn", "xyz_Latn"]  # codes pass through, known or not
    assert expand_languages("val:african5") == list(LANGUAGE_SETS["val:african5"])
    assert expand_languages(["yor_Latn", "val:african5"]) == ["yor_Latn", *LANGUAGE_SETS["val:african5"]]
    with pytest.raises(
        ValueError, match=r"Unknown language set 'tier:hihg'\. Did you mean 'tier:high'.*Known: .*eval:lowres25"
    ):
        expand_languages(["tier:hihg"])


def test_config_language_fields_take_set_names():
    from xmeta.bench.config import BenchConfig
    from xmeta.config import ConfigError, load_config
    from xmeta.training.config import TrainConfig

    cfg = load_config(TrainConfig, None, ["data.train_langs=tier:high", "data.val_langs=[val:african5]"])
    assert (
        list(cfg.data.train_langs) == high_resource_languages() and cfg.data.val_langs == LANGUAGE_SETS["val:african5"]
    )
    bench = load_config(BenchConfig, None, ["langs=[eval:lowres10, kab_Latn]"])
    assert bench.langs == [*LANGUAGE_SETS["eval:lowres10"], "kab_Latn"]
    with pytest.raises(ConfigError, match=r"data\.val_langs: Unknown language set 'val:africa5'"):
        load_config(TrainConfig, None, ["data.val_langs=val:africa5"])
    with pytest.raises(ConfigError, match=r"langs: Unknown language set 'eval:lowres52'"):
        load_config(BenchConfig, None, ["langs=eval:lowres52"])
    with pytest.raises(ConfigError, match="lists a language twice"):  # a set and one of its codes
        load_config(BenchConfig, None, ["langs=[eval:lowres10, swh_Latn]"])
