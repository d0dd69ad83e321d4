"""Method specs, meta-run reading (algorithm, training data) and the leakage check that runs first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from const_learner import ConstLearner

from xmeta.artifacts import TrainingData, resolve
from xmeta.bench import (
    BenchConfig,
    BuildContext,
    build_learner,
    describe_method,
    parse_method,
    register_method,
    run_bench,
)
from xmeta.bench.metarun import read_meta_run
from xmeta.config import ConfigError
from xmeta.data.leakage import LeakageError
from xmeta.errors import InputError
from xmeta.interfaces import Example
from xmeta.registry import UnknownNameError

ADAPTS: list[str] = []


class CountingLearner(ConstLearner):
    def adapt(self, support: Sequence[Example], *, seed: int = 0):  # noqa: ANN201
        ADAPTS.append(support[0].lang)
        return super().adapt(support, seed=seed)


register_method("fake-count", lambda spec, ctx: CountingLearner(), overwrite=True)

# A method registered from outside with its own option schema: a mapping name -> default or type.
OPTIONS_SEEN: list[dict] = []


def _build_knn(spec, ctx):  # noqa: ANN001, ANN202
    OPTIONS_SEEN.append(dict(ctx.options))
    return CountingLearner()


register_method(
    "fake-knn",
    _build_knn,
    options={"k": 3, "metric": Literal["cosine", "euclidean"]},
    help="test fake with options",
    overwrite=True,
)


def meta_run(tmp_path: Path, algorithm: str = "protomaml", nested: bool = True, name: str = "run", data=None) -> Path:
    """A run in the format before xmeta/2 (final/xmeta_meta.json, no digests, no training ids): the
    compatibility path, whose leakage check re-reads the recorded splits from the data directory."""
    from safetensors.torch import save_file

    run = tmp_path / name
    ckpt = run / "final" if nested else run
    ckpt.mkdir(parents=True)
    data = data or {"task": "sib200", "train_langs": ["eng_Latn", "fra_Latn"], "val_langs": ["deu_Latn"], "k_shot": 5}
    meta = {
        "format": "xmeta-meta/1",
        "encoder": {},
        "meta": {"algorithm": algorithm},
        "extra": {"step": 500, "data": data},
    }
    (ckpt / "xmeta_meta.json").write_text(json.dumps(meta))
    save_file({"head.log_scale": torch.zeros(())}, str(ckpt / "meta_params.safetensors"))
    return run


def test_parse_specs_and_defaults() -> None:
    assert parse_method("icl").arg == "gemma-3-270m"
    assert parse_method("icl0:my-llm").arg == "my-llm"
    assert parse_method("meta:runs/a:b").arg == "runs/a:b"  # only the first ':' splits
    assert parse_method("frozen-proto").arg is None
    with pytest.raises(UnknownNameError, match="Did you mean 'finetune'"):
        parse_method("fintune")
    with pytest.raises(ValueError, match="needs an argument"):
        parse_method("external")


def test_meta_run_names_its_algorithm_and_training_data(tmp_path: Path) -> None:
    run = meta_run(tmp_path, algorithm="fomaml")
    assert resolve(run) == run / "final"
    info = describe_method(parse_method(f"meta:{run}"), BuildContext("sib200", "multilingual-e5-small"))
    assert info.display == f"meta:{run} (fomaml)" and info.details["algorithm"] == "fomaml"
    assert info.training.splits_by_lang == {"eng_Latn": ("train",), "fra_Latn": ("train",), "deu_Latn": ("dev",)}
    assert read_meta_run(str(run / "final")).algorithm == "fomaml"


def test_meta_run_without_training_data_or_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_meta_run(str(tmp_path / "missing"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "xmeta_meta.json").write_text(
        json.dumps({"format": "xmeta-meta/1", "encoder": {}, "meta": {"algorithm": "protonet"}, "extra": {}})
    )
    with pytest.raises(InputError, match="missing meta_params.safetensors"):
        read_meta_run(str(bare))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(bare / "meta_params.safetensors"))
    with pytest.raises(InputError, match="no leakage check is possible"):
        read_meta_run(str(bare))


def test_meta_default_points_at_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = meta_run(tmp_path, nested=False)
    monkeypatch.setenv("XMETA_META_DEFAULT", str(run))
    assert read_meta_run("default").checkpoint == run


def _cfg(data_dir: Path, out: Path, methods: list[str], **kw) -> BenchConfig:
    base = dict(langs=["swh_Latn"], k_shot=[1], q_query=2, episodes_per_lang=2, bootstrap=200, plots=False)
    return BenchConfig(methods=methods, data_dir=str(data_dir), out=str(out), **{**base, **kw})


def test_a_leak_aborts_before_any_method_runs(data_dir: Path, tmp_path: Path) -> None:
    ADAPTS.clear()
    run = meta_run(tmp_path)
    # Queries from dev: meta-validation saw deu_Latn's dev split, i.e. the translations of these queries.
    cfg = _cfg(data_dir, tmp_path / "out", ["fake-count", f"meta:{run}"], support_split="train", query_split="dev")
    with pytest.raises(LeakageError, match=f"meta:{run}.*seen in meta-training"):
        run_bench(cfg, progress=False)
    assert ADAPTS == []
    assert not list((tmp_path / "out").glob("cells/**/*.json"))


def test_a_clean_meta_run_is_checked_and_reported(data_dir: Path, tmp_path: Path) -> None:
    clean = meta_run(tmp_path)
    name = f"meta:{clean}"
    cfg = _cfg(data_dir, tmp_path / "out", ["fake-count", name])
    # The real meta learner needs a model; a stand-in learner is injected for this spec.
    res = run_bench(cfg, learners={name: CountingLearner()}, progress=False)
    assert res["methods"][name]["algorithm"] == "protomaml"
    assert res["methods"][name]["display"].endswith("(protomaml)")
    assert res["leakage_check"][name].startswith("ok:")
    assert "(protomaml)" in (tmp_path / "out" / "results.md").read_text()


def test_training_record_round_trips_and_stores_shared_ids_once() -> None:
    rows = [(f"sib200:{lang}:train:{k}", f"sib200:{k}") for lang in ("eng_Latn", "fra_Latn") for k in range(50)]
    rows += [("sib200:deu_Latn:dev:7", "sib200:7")]
    record = TrainingData.from_records("sib200", rows)
    assert record.splits_by_lang == {"deu_Latn": ("dev",), "eng_Latn": ("train",), "fra_Latn": ("train",)}
    text = record.to_text()
    assert text.count('"sib200:49"') == 1  # the source ids of the two parallel languages are stored once
    back = TrainingData.from_text(text)
    assert back == record and sorted(back.leakage_records()) == sorted(rows)
    assert record.summary()["rows"] == 101 and len(record.summary()["sha256"]) == 64


def test_recorded_ids_check_leakage_without_the_training_languages(data_dir: Path, tmp_path: Path) -> None:
    """A run records what it read, so its languages need not be in the benchmark's data directory."""
    from toy_task import toy_encoder

    from xmeta.meta import MetaConfig, MetaModel, save_meta_model

    only_eval = tmp_path / "data" / "sib200" / "annotated"
    only_eval.mkdir(parents=True)
    (only_eval / "swh_Latn").symlink_to(data_dir / "sib200" / "annotated" / "swh_Latn")
    model = MetaModel(toy_encoder(), MetaConfig(algorithm="protonet"))
    # arb_Arab is not in the data directory; its train split shares no sentence with swh's test queries.
    clean = TrainingData.from_records("sib200", [(f"sib200:arb_Arab:train:{k}", None) for k in range(3)])
    run = save_meta_model(model, tmp_path / "clean", training=clean)
    cfg = _cfg(tmp_path / "data", tmp_path / "out", ["fake-count", f"meta:{run}"])
    res = run_bench(cfg, learners={f"meta:{run}": CountingLearner()}, progress=False)
    assert res["leakage_check"][f"meta:{run}"].startswith("ok:")
    # The same run, had its validation read swh's test split: every query's source sentence leaks.
    from xmeta.data import load_task
    from xmeta.data.leakage import records

    swh = records(load_task("sib200", str(tmp_path / "data"), langs=["swh_Latn"], splits=["test"]), "train")
    leaky = TrainingData.from_records("sib200", [(f"sib200:arb_Arab:dev:{sid.split(':')[1]}", sid) for _, sid in swh])
    run = save_meta_model(model, tmp_path / "leaky", training=leaky)
    cfg = _cfg(tmp_path / "data", tmp_path / "out2", ["fake-count", f"meta:{run}"])
    with pytest.raises(LeakageError, match="seen in meta-training"):
        run_bench(cfg, learners={f"meta:{run}": CountingLearner()}, progress=False)


def test_real_core_learners_are_wired(data_dir: Path, tmp_path: Path) -> None:
    """frozen-proto, finetune and meta:<run> through xmeta.meta's learners, on a tiny saved encoder."""
    from tiny_models import tiny_encoder, tiny_tokenizer

    from xmeta.meta import MetaConfig, MetaModel, save_meta_model
    from xmeta.models.encoder import Encoder, EncoderConfig

    enc_dir = tmp_path / "tiny-encoder"
    tok = tiny_tokenizer(["the", "of", "a", "in"])
    tiny_encoder(len(tok), hidden=16, layers=2, heads=2).save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    enc_options = {"text_prefix": "", "lora_r": 2, "lora_alpha": 2.0, "max_length": 16}
    run = meta_run(tmp_path, algorithm="protonet", name="tiny-run")
    model = MetaModel(
        Encoder.from_config(EncoderConfig(model=str(enc_dir), **enc_options)), MetaConfig(algorithm="protonet")
    )
    save_meta_model(model, run / "final", training=TrainingData("sib200", {"eng_Latn": ("train",)}))
    cfg = _cfg(
        data_dir,
        tmp_path / "out",
        ["frozen-proto", "finetune", f"meta:{run}"],
        encoder=str(enc_dir),
        method_options={"frozen-proto": {"encoder": enc_options}, "finetune": {"encoder": enc_options, "steps": 2}},
    )
    res = run_bench(cfg, progress=False)
    for name, m in res["methods"].items():
        assert m["complete"], (name, m["failed"])
        assert 0 <= m["mean_accuracy"] <= 1
    assert res["methods"][f"meta:{run}"]["algorithm"] == "protonet"


def test_icl_methods_are_wired(data_dir: Path, tmp_path: Path) -> None:
    """icl:<dir> and icl0:<dir> through xmeta.icl.ICLLearner, on a tiny saved causal LM."""
    from tiny_models import tiny_bpe_tokenizer, tiny_causal_lm

    lm_dir = tmp_path / "tiny-lm"
    tok = tiny_bpe_tokenizer()
    tiny_causal_lm(len(tok), max_positions=4096).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    cfg = _cfg(data_dir, tmp_path / "out", [f"icl:{lm_dir}", f"icl0:{lm_dir}"], q_query=1)
    res = run_bench(cfg, progress=False)
    for name, m in res["methods"].items():
        assert m["complete"], (name, m["failed"])
        assert m["cost"]["ms_per_query"] > 0
    assert res["methods"][f"icl0:{lm_dir}"]["mode"] == "zero-shot"
    assert res["methods"][f"icl:{lm_dir}"]["template"] == "topic"


def test_a_registered_method_owns_its_options(data_dir: Path, tmp_path: Path) -> None:
    """Config checks, did-you-mean errors and the build's options all come from the method's own schema."""
    base = {"langs": ["swh_Latn"], "methods": ["fake-knn"]}
    with pytest.raises(ConfigError, match="Unknown fake-knn option 'kk'. Did you mean 'k'"):
        BenchConfig(**base, method_options={"fake-knn": {"kk": 5}})
    with pytest.raises(ConfigError, match="method_options.fake-knn.k: expected int"):
        BenchConfig(**base, method_options={"fake-knn": {"k": "many"}})
    with pytest.raises(ConfigError, match="method_options.fake-knn.metric: 'manhattan' is not one of"):
        BenchConfig(**base, method_options={"fake-knn": {"metric": "manhattan"}})
    with pytest.raises(ConfigError, match="unknown method kind: Unknown method 'fake-knnn'. Did you mean 'fake-knn'"):
        BenchConfig(**base, method_options={"fake-knnn": {"k": 1}})
    with pytest.raises(ConfigError, match="method_options.fake-knn must be a mapping"):
        BenchConfig(**base, method_options={"fake-knn": 5})
    with pytest.raises(ConfigError, match="'fake-count' takes no options"):  # no schema: no options
        BenchConfig(**base, method_options={"fake-count": {"k": 1}})
    # The build gets the options checked and converted, with the schema's defaults; a type-only
    # entry (metric) is absent unless given.
    OPTIONS_SEEN.clear()
    build_learner(parse_method("fake-knn"), BuildContext("sib200", "e5"))
    build_learner(parse_method("fake-knn"), BuildContext("sib200", "e5", {"metric": "cosine"}))
    assert OPTIONS_SEEN == [{"k": 3}, {"k": 3, "metric": "cosine"}]
    OPTIONS_SEEN.clear()
    res = run_bench(
        _cfg(data_dir, tmp_path / "out", ["fake-knn"], method_options={"fake-knn": {"k": "5"}}), progress=False
    )
    assert OPTIONS_SEEN == [{"k": 5}] and res["methods"]["fake-knn"]["complete"]


@dataclass
class SketchOptions:
    seed: int
    width: int = 8
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


def test_a_dataclass_schema_is_checked_by_the_dataclass() -> None:
    seen = []
    register_method(
        "fake-sketch",
        lambda spec, ctx: seen.append(ctx.options) or CountingLearner(),
        options=SketchOptions,
        overwrite=True,
    )
    build_learner(parse_method("fake-sketch"), BuildContext("sib200", "e5", {"seed": "1", "scale": 2}))
    assert seen == [{"seed": 1, "width": 8, "scale": 2.0}]
    with pytest.raises(ConfigError, match="width must be >= 1"):
        BenchConfig(
            langs=["swh_Latn"], methods=["fake-sketch"], method_options={"fake-sketch": {"seed": 1, "width": 0}}
        )
    with pytest.raises(ConfigError, match="Unknown fake-sketch option 'widht'. Did you mean 'width'"):
        describe_method(parse_method("fake-sketch"), BuildContext("sib200", "e5", {"seed": 1, "widht": 2}))
    with pytest.raises(ConfigError, match="'fake-sketch' needs method_options.fake-sketch.seed"):
        build_learner(parse_method("fake-sketch"), BuildContext("sib200", "e5"))


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("frozen-proto", {"distanse": "cosine"}, "Unknown frozen-proto option 'distanse'. Did you mean 'distance'"),
        ("finetune", {"stepz": 3}, "Unknown finetune option 'stepz'. Did you mean 'steps'"),
        ("meta", {"inner_step": 3}, "Unknown meta option 'inner_step'. Did you mean 'inner_steps'"),
        ("external", {"nam": "x"}, "Unknown external option 'nam'. Did you mean 'name'"),
        ("icl0", {"batchsize": 3}, "Unknown icl0 option 'batchsize'. Did you mean 'batch_size'"),
        ("icl", {"zero_shot": True}, "Unknown icl option 'zero_shot'"),  # the kind (icl or icl0) decides
        ("setfit", {"num_epoch": 2}, "Unknown setfit option 'num_epoch'. Did you mean 'num_epochs'"),
        ("logreg", {"c": 2.0}, "Unknown logreg option 'c'"),
    ],
)
def test_built_in_methods_refuse_misspelt_options_in_the_config(kind: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchConfig(langs=["swh_Latn"], method_options={kind: options})
