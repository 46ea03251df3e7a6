"""Model names resolve the way Ollama resolves them (shared/ollama-api.md §4)."""

import pytest

from app.fleet.names import InvalidModelName, display_name, is_cloud_model, model_key, parse


@pytest.mark.parametrize("spelling", [
    "llama3", "llama3:latest", "Llama3", "LLAMA3:LATEST", "library/llama3",
    "registry.ollama.ai/library/llama3:latest", "Registry.Ollama.AI/Library/llama3",
])
def test_spellings_of_one_model_share_a_key(spelling):
    assert model_key(spelling) == "llama3:latest"


def test_namespaced_model_keeps_namespace():
    assert display_name("mattw/pygmalion") == "mattw/pygmalion:latest"
    assert model_key("mattw/pygmalion") != model_key("pygmalion")


def test_colon_before_last_slash_is_a_port_not_a_tag():
    name = parse("localhost:5000/ns/m")
    assert (name.host, name.namespace, name.model, name.tag) == ("localhost:5000", "ns", "m", "latest")
    assert display_name("localhost:5000/ns/m") == "localhost:5000/ns/m:latest"


def test_tags_are_distinct_models():
    assert model_key("llama3:8b") != model_key("llama3:70b")
    assert model_key("llama3:8b") == model_key("Llama3:8B")


@pytest.mark.parametrize("bad", ["", "   ", "a/b/c/d", "bad name", "x:", ":tag", "m:t:u", "a" * 400, 5, None])
def test_invalid_names_are_refused(bad):
    with pytest.raises(InvalidModelName):
        model_key(bad)


def test_cloud_models():
    assert is_cloud_model("gpt-oss:120b-cloud")
    assert is_cloud_model("kimi:cloud")
    assert not is_cloud_model("llama3")
