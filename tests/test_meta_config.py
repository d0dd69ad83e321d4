"""MetaConfig validation and resolution; the algorithm registry; inner-parameter selection."""

from __future__ import annotations

import dataclasses

import pytest
from toy_task import toy_encoder

from xmeta.config import ConfigError, from_dict
from xmeta.meta import ALGORITHMS, MetaConfig, MetaModel


def test_registry_names() -> None:
    assert ALGORITHMS.names() == ["fomaml", "maml", "protomaml", "protonet"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"algorithm": "protomam"}, "Did you mean 'protomaml'"),
        ({"algorithm": "maml", "first_order": True}, "fomaml"),
        ({"algorithm": "fomaml", "first_order": False}, "'maml'"),
        ({"algorithm": "protonet", "head": "linear_zero"}, "does not fit"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"temperature": -1.0}, "temperature"),
        ({"inner_params": "top:x"}, "top:N"),
        ({"inner_params": "(unclosed"}, "regex"),
        ({"projection_dim": 0}, "projection_dim"),
    ],
)
def test_invalid_configs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetaConfig(**kwargs)


def test_from_dict_reports_config_errors() -> None:
    with pytest.raises(ConfigError, match="inner_step"):
        from_dict(MetaConfig, {"inner_step": 3})
    cfg = from_dict(MetaConfig, {"algorithm": "maml", "inner_steps": "3", "learn_inner_lr": "true"})
    assert cfg.inner_steps == 3 and cfg.learn_inner_lr


def test_resolved_views() -> None:
    assert MetaConfig(algorithm="maml").second_order
    assert not MetaConfig(algorithm="fomaml").second_order
    assert not MetaConfig(algorithm="protomaml").second_order  # first order by default
    assert MetaConfig(algorithm="protomaml", first_order=False).second_order
    assert not MetaConfig(algorithm="protonet").second_order
    assert MetaConfig(algorithm="protomaml").effective_head == "linear_proto"
    assert MetaConfig(algorithm="maml").effective_head == "proto"
    assert MetaConfig(distance="cosine").effective_temperature == pytest.approx(0.1)
    assert MetaConfig(inner_steps=3).effective_eval_inner_steps == 3
    # unresolved fields keep dataclasses.replace consistent across algorithms
    assert dataclasses.replace(MetaConfig(algorithm="fomaml"), algorithm="maml").second_order


def test_inner_param_selection() -> None:
    enc = toy_encoder()

    def names(**kwargs: object) -> list[str]:
        return MetaModel(enc, MetaConfig(algorithm="protomaml", **kwargs)).inner_param_names()

    every = names()
    assert len(every) == 8 + 2 and every[-2:] == ["episode_head.weight", "episode_head.bias"]
    assert names(inner_params="head") == ["episode_head.weight", "episode_head.bias"]
    assert names(inner_params="head", projection_dim=4)[:2] == ["head.projection.weight", "head.projection.bias"]
    top = names(inner_params="top:1")
    assert len(top) == 4 + 2 and all(".layer.1." in n for n in top[:4])
    assert names(inner_params=r"value\.lora_B") == [n for n in every if "value.lora_B" in n]
    with pytest.raises(ValueError, match="selects no tensor"):
        MetaModel(enc, MetaConfig(algorithm="maml", inner_params="head"))
    # learned temperature and learned inner LRs are meta-parameters, never adapted
    model = MetaModel(enc, MetaConfig(algorithm="maml", learn_temperature=True, learn_inner_lr=True))
    assert "head.log_scale" in model.meta_params() and "head.log_scale" not in model.inner_param_names()
    assert len(model.inner_lrs) == len(model.inner_param_names()) == 8
