"""API documentation: one valid OpenAPI document for every route, and pages that work offline."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from tornado import web

from app.api import docs
from app.api.base import BaseHandler, ManagementHandler
from app.server import build_application
from tests.api.mgmt import admin
from tests.conftest import ndjson

TAG_NAMES = {tag["name"] for tag in docs.TAGS}


async def _document(proxy) -> dict[str, Any]:
    response = await proxy.request("GET", "/api/openapi.json")
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(response.body)


def _deref(schema: Any, document: dict[str, Any]) -> Any:
    """``schema`` with every ``$ref`` into components replaced by its target (our schemas have no cycles)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            return _deref(document["components"]["schemas"][name], document)
        return {key: _deref(value, document) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_deref(item, document) for item in schema]
    return schema


def _conforms(document: dict[str, Any], path: str, method: str, response) -> None:
    """The response's status, content type and body are what the document says for this operation."""
    operation = document["paths"][path][method.lower()]
    responses = operation["responses"]
    documented = responses.get(str(response.code)) or responses.get("default")
    assert documented is not None, f"{method} {path}: status {response.code} is not documented"
    if not response.body:
        return
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    content = documented.get("content") or {}
    assert media in content, f"{method} {path} {response.code}: {media} is not documented ({list(content)})"
    validator = OAS30Validator(_deref(content[media]["schema"], document))
    if media == "application/x-ndjson":
        values = ndjson(response.body)
    elif media == "application/json":
        values = [json.loads(response.body)]
    else:
        return
    for value in values:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
        assert not errors, f"{method} {path} {response.code}: {errors} in {value}"


# -- the document ------------------------------------------------------------------------------------------------


async def test_document_is_valid_openapi_and_the_same_at_both_addresses(env):
    proxy = await env.proxy()
    first = await proxy.request("GET", "/api/openapi.json")
    document = json.loads(first.body)
    validate(document)
    assert document["openapi"].startswith("3.") and document["info"]["title"] == "Aivonx Proxy"
    schema = await proxy.request("GET", "/api/schema")
    assert schema.code == 200 and json.loads(schema.body) == document
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "cookieAuth", "gatewayKey"}
    for name in ("Error", "OpenAIError", "Node", "NodeInput", "RoutingConfig", "FleetState", "Tokens", "User",
                 "Key", "PullProgress", "GenerateRequest", "GenerateResponse", "ChatRequest", "ChatResponse",
                 "OpenAIChatCompletion", "OpenAIModelList"):
        assert name in document["components"]["schemas"], name


async def test_document_is_cached_revalidated_and_compressed(env):
    proxy = await env.proxy()
    first = await proxy.request("GET", "/api/openapi.json")
    etag = first.headers["Etag"]
    again = await proxy.request("GET", "/api/openapi.json", headers={"If-None-Match": etag})
    assert again.code == 304 and not again.body
    packed = await proxy.request("GET", "/api/openapi.json", headers={"Accept-Encoding": "gzip"},
                                 decompress_response=False)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(packed.body)) == json.loads(first.body)


async def test_every_route_and_method_of_the_table_is_documented(env):
    proxy = await env.proxy()
    document = await _document(proxy)
    app = build_application(proxy.services)
    assert docs.collect(app).missing == []
    seen = 0
    for matcher, handler in docs.handler_rules(app):
        path, _ = docs.openapi_path(matcher, handler)
        for method in docs.implemented_methods(handler):
            operation = document["paths"].get(path, {}).get(method)
            assert operation is not None, f"{method.upper()} {path} ({handler.__name__}) is not documented"
            assert operation.get("summary"), (path, method)
            assert operation.get("tags") and set(operation["tags"]) <= TAG_NAMES, (path, method, operation.get("tags"))
            assert operation["responses"], (path, method)
            seen += 1
    expected = {
        "/", "/api/version", "/api/tags", "/api/ps", "/api/show", "/api/generate", "/api/chat", "/api/embed",
        "/api/embeddings", "/api/pull", "/api/delete", "/api/copy", "/api/push", "/api/create",
        "/api/blobs/{digest}", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
        "/v1/models/{name}", "/api/proxy/nodes", "/api/proxy/nodes/{node_id}", "/api/proxy/nodes/{node_id}/check",
        "/api/proxy/config", "/api/proxy/state", "/api/auth/login", "/api/auth/me", "/api/users",
        "/api/users/{user_id}", "/api/proxy/keys", "/api/proxy/keys/{key_id}", "/api/openapi.json", "/api/schema",
        "/swagger", "/redoc",
    }
    assert expected <= set(document["paths"]), expected - set(document["paths"])
    assert seen >= 60


def test_an_undocumented_method_is_reported():
    class Documented(BaseHandler):
        def get(self, item: str) -> None:
            """
            ---
            summary: Documented
            tags: [docs]
            responses: {"200": {description: ok}}
            """

        def delete(self, item: str) -> None:
            pass

    app = web.Application([(r"/things/([^/]+)", Documented, {"services": None})])
    collected = docs.collect(app)
    assert collected.missing == [("/things/{item}", "delete")]
    assert [p["name"] for p in collected.paths["/things/{item}"]["get"]["parameters"]] == ["item"]


def test_a_documented_path_parameter_the_route_lacks_is_an_error():
    class Wrong(BaseHandler):
        def get(self) -> None:
            """
            ---
            summary: Wrong
            tags: [docs]
            parameters: [{name: ghost, in: path, required: true, schema: {type: string}}]
            responses: {"200": {description: ok}}
            """

    with pytest.raises(docs.DocsError, match="ghost"):
        docs.collect(web.Application([(r"/wrong", Wrong, {"services": None})]))


async def test_path_parameters_take_the_handlers_names(env):
    proxy = await env.proxy()
    paths = (await _document(proxy))["paths"]
    for path, method, name in [("/api/proxy/nodes/{node_id}", "delete", "node_id"),
                               ("/api/proxy/keys/{key_id}", "get", "key_id"),
                               ("/api/users/{user_id}", "patch", "user_id"),
                               ("/api/blobs/{digest}", "head", "digest"),
                               ("/v1/models/{name}", "get", "name")]:
        params = [p for p in paths[path][method]["parameters"] if p["in"] == "path"]
        assert [(p["name"], p["required"]) for p in params] == [(name, True)], (path, params)


async def test_security_errors_and_head_are_filled_in(env):
    proxy = await env.proxy()
    document = await _document(proxy)
    paths = document["paths"]
    app = build_application(proxy.services)
    for matcher, handler in docs.handler_rules(app):
        path, _ = docs.openapi_path(matcher, handler)
        for method in docs.implemented_methods(handler):
            operation = paths[path][method]
            assert "default" in operation["responses"], (path, method)
            if issubclass(handler, ManagementHandler) and operation["security"]:
                assert {"bearerAuth": []} in operation["security"], (path, method)
    assert paths["/api/proxy/nodes"]["post"]["security"] == [{"bearerAuth": []}, {"cookieAuth": []}]
    assert paths["/api/auth/login"]["post"]["security"] == []
    assert paths["/api/proxy/health"]["get"]["security"] == []
    assert {"gatewayKey": []} in paths["/api/chat"]["post"]["security"]
    assert {} in paths["/api/chat"]["post"]["security"]  # only with require_api_key
    error = paths["/api/chat"]["post"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    openai = paths["/v1/chat/completions"]["post"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert openai == {"$ref": "#/components/schemas/OpenAIError"}
    head = paths["/api/tags"]["head"]
    assert head["summary"].endswith("(headers only)") and "content" not in head["responses"]["200"]
    assert "X-Aivonx-Node" in paths["/api/generate"]["post"]["responses"]["200"]["headers"]


# -- the pages ------------------------------------------------------------------------------------------------


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}


@pytest.mark.parametrize("page", ["/swagger", "/redoc"])
async def test_pages_load_everything_from_the_proxy_itself(env, page):
    proxy = await env.proxy()
    response = await proxy.request("GET", page)
    assert response.code == 200 and response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = response.body.decode()
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', html)
    assert len(urls) >= 3
    assert "http://" not in html and "https://" not in html and "//" not in "".join(urls)
    assert "<script>" not in html  # no inline script: the CSP forbids it
    for url in urls:
        assert url.startswith("/docs-assets/"), url
        asset = await proxy.request("GET", url)
        assert asset.code == 200, url
        extension = re.search(r"\.[a-z]+(?=\?|$)", url).group(0)
        assert asset.headers["Content-Type"].startswith(CONTENT_TYPES[extension]), (url, asset.headers["Content-Type"])
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        if extension == ".js":
            text = asset.body.decode()
            assert "cdn.redoc.ly" not in text and "cdnjs" not in text
            if url.startswith("/docs-assets/swagger-ui/init.js"):
                assert '"/api/openapi.json"' in text and "validatorUrl: null" in text
    if page == "/redoc":
        assert 'data-spec-url="/api/openapi.json"' in html


async def test_assets_are_cached_compressed_and_unknown_ones_are_404_json(env):
    proxy = await env.proxy()
    url = "/docs-assets/swagger-ui/swagger-ui-bundle.js"
    packed = await proxy.request("GET", url, headers={"Accept-Encoding": "gzip"}, decompress_response=False)
    assert packed.code == 200 and packed.headers["Content-Encoding"] == "gzip"
    assert "max-age" in packed.headers["Cache-Control"]
    assert len(packed.body) < 600_000  # about 1.4 MB unpacked
    revalidate = {"Accept-Encoding": "gzip", "If-None-Match": packed.headers["Etag"]}
    again = await proxy.request("GET", url, headers=revalidate, decompress_response=False)
    assert again.code == 304
    for missing in ("/docs-assets/swagger-ui/index.html", "/docs-assets/redoc/../../x", "/docs-assets/other/a.js"):
        status, body = await proxy.json("GET", missing)
        assert status == 404 and isinstance(body, dict) and body["error"], (missing, body)


# -- the document describes what the proxy really answers ------------------------------------------------------------


async def test_responses_conform_to_the_documented_schemas(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    document = await _document(proxy)
    auth = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    calls = [
        ("GET", "/api/version", "/api/version", None, {}),
        ("GET", "/api/tags", "/api/tags", None, {}),
        ("GET", "/api/ps", "/api/ps", None, {}),
        ("POST", "/api/show", "/api/show", {"model": "llama3"}, {}),
        ("POST", "/api/show", "/api/show", {"model": "nope"}, {}),
        ("POST", "/api/generate", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": False}, {}),
        ("POST", "/api/generate", "/api/generate", {"model": "llama3", "prompt": "hi"}, {}),
        ("POST", "/api/generate", "/api/generate", {"prompt": "hi"}, {}),
        ("POST", "/api/chat", "/api/chat", {**chat, "stream": False}, {}),
        ("POST", "/api/chat", "/api/chat", chat, {}),
        ("POST", "/api/embed", "/api/embed", {"model": "llama3", "input": ["a", "b"]}, {}),
        ("POST", "/api/embeddings", "/api/embeddings", {"model": "llama3", "prompt": "a"}, {}),
        ("POST", "/api/create", "/api/create", {"model": "x"}, {}),
        ("GET", "/v1/models", "/v1/models", None, {}),
        ("GET", "/v1/models/llama3:latest", "/v1/models/{name}", None, {}),
        ("GET", "/v1/models/nope", "/v1/models/{name}", None, {}),
        ("POST", "/v1/chat/completions", "/v1/chat/completions", chat, {}),
        ("POST", "/v1/chat/completions", "/v1/chat/completions", {"messages": []}, {}),
        ("POST", "/v1/completions", "/v1/completions", {"model": "llama3", "prompt": "hi"}, {}),
        ("POST", "/v1/embeddings", "/v1/embeddings", {"model": "llama3", "input": "hi"}, {}),
        ("GET", "/api/proxy/nodes", "/api/proxy/nodes", None, auth),
        ("GET", "/api/proxy/nodes", "/api/proxy/nodes", None, {}),
        ("GET", f"/api/proxy/nodes/{node_id}", "/api/proxy/nodes/{node_id}", None, auth),
        ("GET", "/api/proxy/nodes/nope", "/api/proxy/nodes/{node_id}", None, auth),
        ("POST", "/api/proxy/nodes", "/api/proxy/nodes", {"name": "x", "port": 0}, auth),
        ("GET", "/api/proxy/config", "/api/proxy/config", None, auth),
        ("PATCH", "/api/proxy/config", "/api/proxy/config", {"fall": "x"}, auth),
        ("GET", "/api/proxy/state", "/api/proxy/state", None, auth),
        ("GET", "/api/proxy/active-requests", "/api/proxy/active-requests", None, auth),
        ("GET", "/api/proxy/health", "/api/proxy/health", None, {}),
        ("POST", "/api/auth/login", "/api/auth/login", {"username": "admin", "password": "wrong-password"}, {}),
        ("GET", "/api/auth/me", "/api/auth/me", None, auth),
        ("GET", "/api/users", "/api/users", None, auth),
        ("GET", "/api/proxy/keys", "/api/proxy/keys", None, auth),
    ]
    for method, url, path, body, headers in calls:
        response = await proxy.request(method, url, body, headers=headers)
        _conforms(document, path, method, response)
