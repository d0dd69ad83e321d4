"""xmeta.config: YAML files composed with ``extends:``, deep-merged, then ``key=value`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xmeta.config import ConfigError, load_config
from xmeta.recipes_index import configs_dir


@dataclass
class Inner:
    a: int = 1
    b: list[str] = field(default_factory=lambda: ["x"])


@dataclass
class Outer:
    name: str = "none"
    steps: int = 0
    inner: Inner = field(default_factory=Inner)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_is_deep_merged_over_its_bases_and_overrides_apply_last(tmp_path):
    write(tmp_path / "grand.yaml", "name: grand\nsteps: 1\ninner: {a: 5, b: [p, q]}\n")
    write(tmp_path / "sub" / "parent.yaml", "extends: ../grand.yaml\nsteps: 2\n")
    child = write(tmp_path / "sub" / "child.yaml", "extends: parent\ninner: {b: [r]}\n")
    cfg = load_config(Outer, child)
    # mappings merge key by key (inner.a kept), lists and scalars replace
    assert cfg == Outer(name="grand", steps=2, inner=Inner(a=5, b=["r"]))
    assert load_config(Outer, child, ["steps=9", "inner.a=7"]) == Outer("grand", 9, Inner(7, ["r"]))


def test_a_base_is_found_beside_the_file_before_the_packaged_configs(tmp_path):
    write(tmp_path / "protonet.yaml", "name: mine\n")  # shadows the packaged protonet for its neighbours
    child = write(tmp_path / "child.yaml", "extends: protonet.yaml\nsteps: 3\n")
    assert load_config(Outer, child) == Outer(name="mine", steps=3)


def test_a_base_named_like_a_packaged_config_resolves_to_it(tmp_path, monkeypatch):
    from xmeta.training.config import TrainConfig

    monkeypatch.chdir(tmp_path)  # never the cwd: a copy of a shipped config still finds its bases
    write(tmp_path / "protonet.yaml", "max_steps: 1\n")
    copy = write(tmp_path / "copies" / "mine.yaml", "extends: protonet_hr50\nmax_steps: 5\n")
    cfg = load_config(TrainConfig, copy)
    packaged = load_config(TrainConfig, configs_dir() / "protonet_hr50.yaml")
    assert cfg.max_steps == 5 and cfg.data == packaged.data and cfg.encoder.lora_top_layers == 4
    # a copied shipped config keeps working outside the package: `extends: _base` names the packaged base
    base_copy = write(tmp_path / "copies" / "mine2.yaml", (configs_dir() / "protonet.yaml").read_text())
    assert load_config(TrainConfig, base_copy) == load_config(TrainConfig, configs_dir() / "protonet.yaml")


def test_a_cycle_is_an_error_naming_the_files(tmp_path):
    write(tmp_path / "a.yaml", "extends: b\nsteps: 1\n")
    write(tmp_path / "b.yaml", "extends: c.yaml\n")
    write(tmp_path / "c.yaml", "extends: a\n")
    with pytest.raises(
        ConfigError, match=r"extend each other in a cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"
    ):
        load_config(Outer, tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "extends: self\n")
    with pytest.raises(ConfigError, match=r"cycle: .*self\.yaml -> .*self\.yaml"):
        load_config(Outer, tmp_path / "self.yaml")


def test_an_unknown_base_is_an_error_naming_the_file_and_the_known_names(tmp_path):
    child = write(tmp_path / "child.yaml", "extends: protonett\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, child)
    msg = str(err.value)
    assert msg.startswith(f"{child}: extends: Unknown config 'protonett'.") and "Did you mean 'protonet'" in msg
    missing = write(tmp_path / "missing.yaml", "extends: bases/nope.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: extends: base config file not found: bases/nope\.yaml"):
        load_config(Outer, missing)
    for bad in ("extends: [a, b]\n", "extends: ''\n", "extends: 3\n"):
        write(tmp_path / "bad.yaml", bad)
        with pytest.raises(ConfigError, match=r"bad\.yaml: extends must name one config file"):
            load_config(Outer, tmp_path / "bad.yaml")


def test_an_unknown_key_names_the_file_that_has_it(tmp_path):
    write(tmp_path / "base.yaml", "inner: {aa: 1}\n")
    child = write(tmp_path / "child.yaml", "extends: base\nsteps: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, child)
    assert str(err.value).startswith(f"{tmp_path / 'base.yaml'}: Unknown config key 'inner.aa'. Did you mean 'inner.a'")
    write(tmp_path / "child.yaml", "extends: base.yaml\nstpes: 1\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: Unknown config key 'stpes'\. Did you mean 'steps'"):
        load_config(Outer, child)
    with pytest.raises(ConfigError, match=r"Unknown config key 'extends'"):  # a file's key, not an override
        load_config(Outer, None, ["extends=x"])


def test_a_bad_value_still_names_the_file_it_was_loaded_from(tmp_path):
    write(tmp_path / "base.yaml", "steps: many\n")
    child = write(tmp_path / "child.yaml", "extends: base\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: steps: expected int, got 'many'"):
        load_config(Outer, child)
