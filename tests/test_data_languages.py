"""Language metadata: coverage of SIB-200, the documented tier rule, unknown codes, meta-training picks."""

from __future__ import annotations

import csv

import pytest

from xmeta.data.languages import (
    TIERS,
    derive_tier,
    high_resource_languages,
    language_info,
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
