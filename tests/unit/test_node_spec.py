"""Node registrations are validated field by field, the same for --node and the API."""

import pytest

from app.fleet.node_spec import NodeInvalid, parse_node


def test_address_and_port():
    clean = parse_node({"name": "gpu-1", "address": "10.0.0.5", "port": 11434})
    assert clean["url"] == "http://10.0.0.5:11434" and clean["name"] == "gpu-1" and clean["enabled"] is True


def test_full_url_gets_a_default_name_and_port():
    clean = parse_node({"url": "https://GPU.example.com"})
    assert clean["url"] == "https://gpu.example.com:443" and clean["name"] == "gpu.example.com-443"
    assert parse_node({"url": "gpu-2"})["url"] == "http://gpu-2:11434"


@pytest.mark.parametrize("data, field", [
    ({"name": "a", "address": "h", "port": 0}, "port"),
    ({"name": "a", "address": "h", "port": -1}, "port"),
    ({"name": "a", "address": "h", "port": 65536}, "port"),
    ({"name": "a", "address": "h", "port": "x"}, "port"),
    ({"name": "a", "address": "bad host!", "port": 1}, "address"),
    ({"name": "a", "address": "h", "port": 1, "scheme": "ftp"}, "scheme"),
    ({"url": "ftp://h:1"}, "url"),
    ({"url": "http://user:pw@h:1"}, "url"),
    ({"url": "http://h:1/api"}, "url"),
    ({"name": "", "address": "h", "port": 1}, "name"),
    ({"name": "x" * 101, "address": "h", "port": 1}, "name"),
    ({"name": "<script>", "address": "h", "port": 1}, "name"),
    ({"name": "a", "address": "h", "port": 1, "max_concurrency": 0}, "max_concurrency"),
    ({"name": "a", "address": "h", "port": 1, "headers": {"Host": "x"}}, "headers"),
    ({"name": "a", "address": "h", "port": 1, "headers": {"X-A": "a\r\nb"}}, "headers"),
    ({"name": "a", "address": "h", "port": 1, "bogus": 1}, "bogus"),
])
def test_field_errors(data, field):
    with pytest.raises(NodeInvalid) as info:
        parse_node(data)
    assert field in info.value.errors


def test_partial_update_keeps_other_parts_of_the_address():
    current = {"url": "http://h:11434"}
    assert parse_node({"port": 8080}, partial=True, current=current) == {"url": "http://h:8080"}
    assert parse_node({"enabled": False}, partial=True, current=current) == {"enabled": False}
