"""``GET /metrics``: the Prometheus text format, counters that move with traffic, and who may read it."""

from __future__ import annotations

import gzip
import json

from prometheus_client.parser import text_string_to_metric_families

from tests.api.mgmt import admin, viewer
from tests.conftest import ndjson, sse


async def scrape(proxy, headers=None) -> dict[str, dict]:
    """name → {(sample name, sorted labels): value}; fails unless it parses as the text format."""
    response = await proxy.request("GET", "/metrics", headers=headers or await admin(proxy))
    assert response.code == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(response.body.decode()):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def value(families, family, sample=None, **labels) -> float:
    samples = families.get(family, {})
    return samples.get((sample or family, tuple(sorted(labels.items()))), 0.0)


def node_name(proxy, node) -> str:
    return next(n.name for n in proxy.fleet.nodes.values() if n.url == node.url)


async def test_counters_move_with_traffic(env):
    node = await env.node(["llama3:latest", "qwen2.5:7b"])
    proxy = await env.proxy([node])
    name = node_name(proxy, node)
    headers = await admin(proxy)
    before = await scrape(proxy, headers)
    labels = {"route": "/api/generate", "model": "llama3:latest", "node": name, "status": "200"}
    pair = {"node": name, "model": "llama3:latest"}
    base_requests = value(before, "aivonx_requests", "aivonx_requests_total", **labels)

    tokens_in = tokens_out = 0
    for stream in (False, True, False):
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": stream})
        assert response.code == 200
        last = ndjson(response.body)[-1] if stream else json.loads(response.body)
        tokens_in += last["prompt_eval_count"]
        tokens_out += last["eval_count"]
    response = await proxy.request("POST", "/v1/chat/completions", {
        "model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    usage = json.loads(sse(response.body)[-2])["usage"]
    assert (await proxy.request("POST", "/api/generate", {"model": "unknown-model", "prompt": "x"})).code == 404

    after = await scrape(proxy, headers)
    assert value(after, "aivonx_requests", "aivonx_requests_total", **labels) == base_requests + 3
    assert value(after, "aivonx_tokens_in", "aivonx_tokens_in_total", **pair) == tokens_in
    assert value(after, "aivonx_tokens_out", "aivonx_tokens_out_total", **pair) == tokens_out
    assert value(after, "aivonx_ttfb_seconds", "aivonx_ttfb_seconds_count", **pair) == 3
    assert value(after, "aivonx_request_duration_seconds", "aivonx_request_duration_seconds_count", **pair) == 3
    assert value(after, "aivonx_ttfb_seconds", "aivonx_ttfb_seconds_bucket", **pair, le="+Inf") == 3
    qwen = {"node": name, "model": "qwen2.5:7b"}
    assert value(after, "aivonx_tokens_in", "aivonx_tokens_in_total", **qwen) == usage["prompt_tokens"]
    assert value(after, "aivonx_tokens_out", "aivonx_tokens_out_total", **qwen) == usage["completion_tokens"]
    assert value(after, "aivonx_requests", "aivonx_requests_total", route="/v1/chat/completions",
                 model="qwen2.5:7b", node=name, status="200") == 1
    # A model nobody has is not a label of its own.
    assert value(after, "aivonx_requests", "aivonx_requests_total", route="/api/generate", model="other",
                 node="none", status="404") == 1
    assert not any("unknown-model" in str(key) for family in after.values() for key in family)

    # Read from the fleet at scrape time.
    assert value(after, "aivonx_node_up", node=name) == 1
    assert value(after, "aivonx_node_routable", node=name) == 1
    assert value(after, "aivonx_node_in_flight", node=name) == 0
    assert value(after, "aivonx_node_models", node=name) == 2
    assert value(after, "aivonx_node_health_check_seconds", node=name) > 0
    assert value(after, "aivonx_pool_nodes", pool="active") == 1
    assert value(after, "aivonx_pool_nodes", pool="standby") == 0
    assert "aivonx_queued_requests" in after and "aivonx_usage_records_dropped" in after
    assert value(after, "process_resident_memory_bytes") > 0 and "python_info" in after


async def test_retries_failovers_and_rate_limits_are_counted(env):
    sick, healthy = await env.node(), await env.node()
    proxy = await env.proxy([sick, healthy], config={"require_api_key": True})
    sick.state.set_fault("error_500", routes=["/api/generate"])
    headers = await admin(proxy)
    status, key = await proxy.json("POST", "/api/proxy/keys", {"name": "k", "kind": "gateway", "rpm": 4},
                                   headers=headers)
    gateway = {"Authorization": f"Bearer {key['secret']}"}
    for _ in range(4):
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                       headers=gateway)
        assert response.code == 200
    assert (await proxy.request("GET", "/api/tags", headers=gateway)).code == 429
    families = await scrape(proxy, headers)
    assert value(families, "aivonx_retries", "aivonx_retries_total", node=node_name(proxy, sick)) >= 1
    assert value(families, "aivonx_failovers", "aivonx_failovers_total", route="/api/generate") >= 1
    assert value(families, "aivonx_rate_limited", "aivonx_rate_limited_total", limit="rpm") == 1
    assert value(families, "aivonx_node_up", node=node_name(proxy, sick)) == 0  # 3 failures: standby


async def test_metrics_need_a_login_unless_public_metrics(env):
    proxy = await env.proxy()
    response = await proxy.request("GET", "/metrics")
    assert response.code == 401 and "error" in json.loads(response.body)
    await scrape(proxy, await viewer(proxy))
    status, _ = await proxy.json("PATCH", "/api/proxy/config", {"public_metrics": True}, headers=await admin(proxy))
    assert status == 200
    response = await proxy.request("GET", "/metrics")
    assert response.code == 200 and b"aivonx_pool_nodes" in response.body
    # Content negotiation and compression, as Prometheus asks for them.
    response = await proxy.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                                               "Accept-Encoding": "gzip"}, decompress_response=False)
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(response.body).rstrip().endswith(b"# EOF")


async def test_each_proxy_has_its_own_registry(env):
    node = await env.node()
    first, second = await env.proxy([node]), await env.proxy([node])
    assert (await first.request("POST", "/api/generate", {"model": "llama3", "prompt": "x"})).code == 200
    one, two = await scrape(first), await scrape(second)
    total = sum(v for (sample, _), v in one["aivonx_requests"].items() if sample == "aivonx_requests_total")
    assert total == 1
    assert not [v for (sample, _), v in two.get("aivonx_requests", {}).items() if sample == "aivonx_requests_total"]
