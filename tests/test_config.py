"""Settings: parsed from FACEMATCH_* variables, and every one of them documented in the README."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flask_backend.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_with_its_variable():
    text = README.read_text()
    missing = [f"FACEMATCH_{f.name.upper()}" for f in dataclasses.fields(Settings)
               if f"`FACEMATCH_{f.name.upper()}`" not in text]
    assert missing == []


def test_values_are_parsed_by_type():
    s = Settings.from_env({
        "FACEMATCH_DATA_DIR": "/tmp/x", "FACEMATCH_ONNX_THREADS": "3", "FACEMATCH_ALLOW_PRIVATE_URLS": "yes",
        "FACEMATCH_API_KEYS": "a, b,,", "FACEMATCH_V2_THRESHOLD": "0.5", "FACEMATCH_FORGET_THRESHOLD": "auto",
    })
    assert s.data_dir == Path("/tmp/x") and s.onnx_threads == 3 and s.allow_private_urls is True
    assert s.api_keys == ("a", "b") and s.v2_threshold == 0.5 and s.forget_threshold is None


@pytest.mark.parametrize("name, value", [("FACEMATCH_ONNX_THREADS", "many"), ("FACEMATCH_V1_ENABLED", "perhaps")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_pack_is_a_name_under_the_root_or_a_path(tmp_path):
    assert Settings(model_root=tmp_path, v2_pack="buffalo_l").v2_pack_dir == tmp_path / "buffalo_l"
    assert Settings(model_root=tmp_path, v2_pack=str(tmp_path / "p")).v2_pack_dir == tmp_path / "p"
