"""The text encoder registry: names, classes and instances; configs rebuild encoders."""

from __future__ import annotations

import json

import pytest

from tests.text_encoder.test_base import FakeEncoder
from text_encoder import HFTextEncoder, resolve_text_encoder, text_encoder_from_config, text_encoder_registry
from text_encoder.registry import register_text_encoder

#: Every registered encoder and the test module that covers it (the meta test below).
TESTED = {"hf": "tests/text_encoder/test_hf.py", "hashing": "tests/text_encoder/test_hashing.py"}


def test_every_registered_encoder_has_a_test() -> None:
    untested = sorted(set(text_encoder_registry) - set(TESTED))
    assert not untested, f"registered text encoders without a test: {untested}"


def test_hf_is_registered() -> None:
    assert text_encoder_registry["hf"] is HFTextEncoder


def test_resolve_by_name_class_and_instance() -> None:
    by_name = resolve_text_encoder("hf", max_length=64)
    assert isinstance(by_name, HFTextEncoder)
    assert by_name.max_length == 64
    assert not by_name.is_loaded  # resolving is cheap
    by_class = resolve_text_encoder(HFTextEncoder, pooling="cls")
    assert by_class.pooling == "cls"
    assert resolve_text_encoder(by_name) is by_name
    with pytest.raises(ValueError, match="one or the other"):
        resolve_text_encoder(by_name, max_length=32)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError, match="known encoders are .*hf"):
        resolve_text_encoder("no-such-encoder")


def test_register_twice_and_without_name() -> None:
    class Other(FakeEncoder):
        name = "hf"

    with pytest.raises(ValueError, match="registered twice"):
        register_text_encoder(Other)
    assert register_text_encoder(HFTextEncoder) is HFTextEncoder  # same class again is fine

    class Nameless(FakeEncoder):
        name = ""

    with pytest.raises(ValueError, match="class attribute `name`"):
        register_text_encoder(Nameless)
    assert text_encoder_registry["hf"] is HFTextEncoder


def test_config_round_trip() -> None:
    enc = HFTextEncoder(max_length=128, pooling="max", dtype="bf16", normalize=False)
    config = enc.get_config()
    assert config["name"] == "hf"
    assert "device" not in config["kwargs"]
    assert "text_encoder" not in json.dumps(config)  # registry names, never import paths
    again = text_encoder_from_config(config)
    assert isinstance(again, HFTextEncoder)
    assert again.get_config() == config
    with pytest.raises(ValueError, match="no 'name'"):
        text_encoder_from_config({"kwargs": {}})
