"""Language metadata: name, script and resource tier per FLORES-style code (``swh_Latn``).

The table ships as ``languages.tsv`` next to this module; its header documents the sources:
Joshi et al. (2020) resource classes 0-5 and XLM-R pretraining membership (as listed by the
SIB-200 paper). The tier is derived from those two columns by :func:`derive_tier`:

* ``high``: in XLM-R and Joshi class >= 3 -- where meta-training languages come from;
* ``mid``: in XLM-R otherwise;
* ``low``: not in XLM-R's pretraining data -- the low-resource side of the evaluation;
* ``unknown``: a code the table does not list. Unknown codes still work everywhere: the script
  is parsed from the code's suffix and the name is the code itself.

Configs name language sets instead of pasting them (:func:`expand_languages`): ``tier:high`` (the
table's tier, best-resourced first) or a fixed set of :data:`LANGUAGE_SETS` (``eval:lowres25``).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from xmeta.registry import did_you_mean

Tier = Literal["high", "mid", "low", "unknown"]
TIERS: tuple[str, ...] = ("high", "mid", "low", "unknown")
UNKNOWN_SCRIPT = "Zzzz"  # ISO 15924 "unknown script"


@dataclass(frozen=True)
class Language:
    """Metadata of one language code; ``joshi_class``/``in_xlmr`` are ``None`` when not known."""

    code: str
    name: str
    script: str
    tier: str
    joshi_class: int | None = None
    in_xlmr: bool | None = None

    @property
    def iso(self) -> str:
        """The ISO 639-3 part of the code (``swh`` for ``swh_Latn``)."""
        return self.code.split("_", 1)[0]


def derive_tier(joshi_class: int | None, in_xlmr: bool | None) -> str:
    """The tier rule documented in ``languages.tsv``: high / mid / low / unknown."""
    if in_xlmr is None:
        return "unknown"
    if not in_xlmr:
        return "low"
    return "high" if joshi_class is not None and joshi_class >= 3 else "mid"


def script_of_code(code: str) -> str:
    """The script suffix of a FLORES-style code (``Latn`` for ``swh_Latn``), else ``Zzzz``."""
    parts = code.split("_")
    if len(parts) >= 2 and len(parts[-1]) == 4 and parts[-1].isalpha():
        return parts[-1].capitalize()
    return UNKNOWN_SCRIPT


@functools.lru_cache(maxsize=1)
def language_table() -> dict[str, Language]:
    """All languages of the shipped table, by code (read once)."""
    text = importlib.resources.files("xmeta.data").joinpath("languages.tsv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    table: dict[str, Language] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines)), delimiter="\t"):
        joshi = int(row["joshi_class"]) if row["joshi_class"] else None
        in_xlmr = bool(int(row["in_xlmr"])) if row["in_xlmr"] else None
        table[row["code"]] = Language(row["code"], row["name"], row["script"], row["tier"], joshi, in_xlmr)
    return table


def language_info(code: str) -> Language:
    """Metadata for ``code``; never raises.

    A bare ISO code (``hau``) resolves when exactly one script variant is listed. An unlisted code
    gets tier ``"unknown"``, its own code as name, and the script from its suffix.
    """
    table = language_table()
    if code in table:
        return table[code]
    if "_" not in code:
        variants = [lang for lang in table.values() if lang.iso == code]
        if len(variants) == 1:
            return variants[0]
    return Language(code=code, name=code, script=script_of_code(code), tier="unknown")


def tier_of(code: str) -> str:
    """The resource tier of ``code`` (``"unknown"`` if unlisted)."""
    return language_info(code).tier


def languages_in_tier(tier: str | Iterable[str], available: Iterable[str] | None = None) -> list[str]:
    """Codes in ``tier`` (one or several), optionally restricted to ``available``; sorted.

    Raises:
        ValueError: for a tier name that does not exist.
    """
    wanted = {tier} if isinstance(tier, str) else set(tier)
    bad = wanted - set(TIERS)
    if bad:
        raise ValueError(f"unknown tier(s) {sorted(bad)}; tiers are {', '.join(TIERS)}")
    codes = available if available is not None else language_table()
    return sorted(c for c in codes if tier_of(c) in wanted)


def high_resource_languages(
    exclude: Iterable[str] = (),
    available: Iterable[str] | None = None,
    n: int | None = None,
) -> list[str]:
    """High-tier languages for meta-training, best-resourced first.

    Args:
        exclude: codes never to return (e.g. the evaluation and meta-validation languages). A bare
            ISO code excludes every script variant (``zho`` excludes ``zho_Hans`` and ``zho_Hant``).
        available: restrict to these codes (e.g. the languages present in a dataset).
        n: return at most this many.

    Returns:
        Codes ordered by Joshi class (descending), then code, so the choice is deterministic.
    """
    excluded = set(exclude)
    excluded_iso = {c for c in excluded if "_" not in c}
    candidates = [
        (code, info)
        for code in (available if available is not None else language_table())
        if (info := language_info(code)).tier == "high" and code not in excluded and info.iso not in excluded_iso
    ]
    # Keep the caller's spelling of each code; order by resource class so `n` takes the richest first.
    ordered = sorted(candidates, key=lambda pair: (-(pair[1].joshi_class or 0), pair[0]))
    codes = [code for code, _ in ordered]
    return codes[:n] if n is not None else codes


def describe(codes: Sequence[str]) -> list[dict[str, object]]:
    """Plain rows (code, name, script, tier, joshi_class, in_xlmr) for reports."""
    return [
        {
            "code": c,
            "name": (i := language_info(c)).name,
            "script": i.script,
            "tier": i.tier,
            "joshi_class": i.joshi_class,
            "in_xlmr": i.in_xlmr,
        }
        for c in codes
    ]


# Meta-training languages of the default recipe: SIB-200 languages in Joshi et al. (2020) classes 4-5
# ("winners" and "underdogs") that are also in XLM-R's pretraining set, one script per language.
# None of the 25 low-resource evaluation languages is among them.
HIGH_RESOURCE_LANGS: tuple[str, ...] = (
    "eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "por_Latn",
    "rus_Cyrl", "zho_Hans", "jpn_Jpan", "arb_Arab", "hin_Deva",
)  # fmt: skip
# Meta-validation languages: low-resource African languages (not in XLM-R's pretraining set) that
# are not evaluation languages, so model selection sees the target regime without peeking.
VALIDATION_LANGS: tuple[str, ...] = ("nya_Latn", "run_Latn", "sot_Latn", "tsn_Latn", "kon_Latn")
# The wide validation set for choosing between runs: every low-tier SIB-200 language here that is not
# an evaluation language (the 5 above first, then by code). 74 languages x 4 episodes give a 95%
# interval of about +-0.5 points (eval/select_runs.py); like the 5, none is ever trained on.
VALIDATION_WIDE_LANGS: tuple[str, ...] = VALIDATION_LANGS + (
    "ace_Arab", "acm_Arab", "acq_Arab", "aeb_Arab", "ajp_Arab", "apc_Arab", "arb_Latn", "ars_Arab", "ary_Arab",
    "arz_Arab", "ast_Latn", "awa_Deva", "bak_Cyrl", "bho_Deva", "bjn_Arab", "bjn_Latn", "bod_Tibt", "ceb_Latn",
    "cjk_Latn", "ckb_Arab", "crh_Latn", "dyu_Latn", "dzo_Tibt", "fao_Latn", "fur_Latn", "hne_Deva", "kac_Latn",
    "kam_Latn", "kas_Arab", "kas_Deva", "kea_Latn", "kmb_Latn", "knc_Arab", "knc_Latn", "lij_Latn", "lim_Latn",
    "lmo_Latn", "ltg_Latn", "ltz_Latn", "lua_Latn", "lus_Latn", "mag_Deva", "mai_Deva", "min_Arab", "min_Latn",
    "mlt_Latn", "mni_Beng", "nqo_Nkoo", "oci_Latn", "ory_Orya", "pag_Latn", "pan_Guru", "pap_Latn", "prs_Arab",
    "sat_Olck", "scn_Latn", "srd_Latn", "ssw_Latn", "szl_Latn", "taq_Latn", "taq_Tfng", "tat_Cyrl", "tgk_Cyrl",
    "tgl_Latn", "tuk_Latn", "tzm_Tfng", "vec_Latn", "war_Latn", "yue_Hant",
)  # fmt: skip
# The 25 low-resource evaluation languages of the standard benchmark (eval/configs/sib200_lowres.yaml).
EVALUATION_LANGS: tuple[str, ...] = (
    "swh_Latn", "yor_Latn", "hau_Latn", "amh_Ethi", "quy_Latn", "wol_Latn", "tir_Ethi", "ibo_Latn", "zul_Latn",
    "lin_Latn", "ewe_Latn", "fon_Latn", "bam_Latn", "kin_Latn", "som_Latn", "twi_Latn", "ayr_Latn", "grn_Latn",
    "nus_Latn", "dik_Latn", "mos_Latn", "lug_Latn", "sna_Latn", "xho_Latn", "kab_Latn",
)  # fmt: skip

# Fixed sets by name. Committed runs and benchmarks used these exact lists (in this order, which fixes
# their episodes): change a set only together with the results that used it, or add a new name.
LANGUAGE_SETS: dict[str, tuple[str, ...]] = {
    "train:hr10": HIGH_RESOURCE_LANGS,
    "val:african5": VALIDATION_LANGS,
    "val:wide74": VALIDATION_WIDE_LANGS,
    "eval:lowres25": EVALUATION_LANGS,
    "eval:lowres10": EVALUATION_LANGS[:10],  # the subset the costly methods (finetune, ICL, peers) run on
}
_TIER_PREFIX = "tier:"


def language_set_names() -> list[str]:
    """Every name :func:`language_set` knows: ``tier:<tier>`` and the fixed :data:`LANGUAGE_SETS`."""
    return [f"{_TIER_PREFIX}{t}" for t in TIERS if t != "unknown"] + list(LANGUAGE_SETS)


def language_set(name: str) -> list[str]:
    """The codes of a named language set.

    ``tier:<tier>`` is that tier of the shipped table, best-resourced first (Joshi class descending,
    then code): ``tier:high`` is :func:`high_resource_languages`. Other names are fixed lists
    (:data:`LANGUAGE_SETS`).

    Raises:
        ValueError: an unknown name (the message suggests the close ones and lists them all).
    """
    tier = name.removeprefix(_TIER_PREFIX)
    if name.startswith(_TIER_PREFIX) and tier in TIERS and tier != "unknown":
        return sorted(languages_in_tier(tier), key=lambda code: (-(language_info(code).joshi_class or 0), code))
    if name in LANGUAGE_SETS:
        return list(LANGUAGE_SETS[name])
    raise ValueError(did_you_mean(name, language_set_names(), "language set"))


def expand_languages(items: str | Iterable[str]) -> list[str]:
    """A language list with every set name (an item with a colon: ``tier:high``) replaced by its codes.

    Codes pass through unchanged and in order, so a list without names is returned as it is; a
    single string is one item (``"tier:high"``).

    Raises:
        ValueError: an unknown set name.
    """
    out: list[str] = []
    for item in [items] if isinstance(items, str) else items:
        out.extend(language_set(item) if ":" in item else [item])
    return out
