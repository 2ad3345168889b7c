"""deployinc.config: bundled configs, validation errors that name the key, flags over the file."""

from __future__ import annotations

import pytest

from deployinc.config import bundled_configs, load_config
from deployinc.errors import ConfigError
from deployinc.export import resolve_config


def test_every_bundled_config_loads():
    names = bundled_configs()
    for required in ("googlenet", "inception_v3", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large"):
        assert required in names
    from deployinc.config import CONFIG_DIR

    for n in names:
        cfg = load_config(CONFIG_DIR / f"{n}.toml")
        assert cfg.model == n and cfg.opset >= 13 and len(cfg.input_shape) == 4


def test_inception_v3_config_is_299():
    assert resolve_config("inception_v3").input_shape == (1, 3, 299, 299)


def test_flags_override_file(tmp_path):
    cfg = resolve_config("googlenet", opset=13, exporter="torchscript", dynamic_batch=False)
    assert (cfg.opset, cfg.exporter, cfg.dynamic_batch) == (13, "torchscript", False)
    assert cfg.input_shape == (1, 3, 224, 224)


@pytest.mark.parametrize(
    "text, match",
    [
        ('[model]\nname = "x"\n[export]\nopsett = 17\n', "unknown key 'export.opsett'"),
        ('[model]\nname = "x"\n[exprt]\nopset = 17\n', "unknown table 'exprt'"),
        ('[model]\nname = "x"\n[export]\nopset = "17"\n', "export.opset must be an integer"),
        ('[model]\nname = "x"\n[input]\nshape = [3, 224]\n', "input.shape must be"),
        ('[model]\nname = "x"\n[export]\nexporter = "tf"\n', "export.exporter 'tf' is unknown"),
        ('[export]\nopset = 17\n', "model.name is missing"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
