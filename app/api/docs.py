"""The API's OpenAPI 3 document, and Swagger UI and ReDoc pages that need no internet.

The document is built by apispec from the application's own route table, so a
route cannot exist undocumented without ``tests/api/test_docs.py`` noticing.
Each operation is YAML after a ``---`` line, found on the nearest class of the
handler's MRO that documents the method, either

* in the method's docstring (one operation; tornado-swagger's convention), or
* in the class docstring under the method's name (apispec's convention), or,
  for a handler class mounted on several routes, under the route's OpenAPI path
  and then the method (``/api/embed: {post: …}``).

Paths come from Tornado's own reverse template of each route (``PathMatches``):
a named group gives its name, a positional group the name of the handler
method's parameter (``/api/proxy/keys/([^/]+)`` + ``get(self, key_id)`` →
``/api/proxy/keys/{key_id}``). Path parameters a docstring leaves out are added
(as strings). The builder also fills what every operation shares: the error
body (``Error``, or ``OpenAIError`` on ``/v1``) on error responses that name no
content and as the ``default`` response, the security requirement from the
handler's base class (management: Bearer JWT/API token or session cookie;
gateway: a gateway key, needed only with ``require_api_key``), and ``HEAD``
from ``GET`` where a handler aliases ``head = get``. ``OPTIONS`` (the CORS
preflight every route answers) is described once, in ``info``.

Component schemas: ``SCHEMAS`` dicts of the handlers' modules and of
:mod:`app.api.schemas`.

The pages at ``/swagger`` and ``/redoc`` are small templates here; every script,
stylesheet and image they use is served by the proxy from the installed
``openapi-ui-bundles`` package under ``/docs-assets/`` (fleets are often
air-gapped). Swagger UI runs with its online validator off; ReDoc's attribution
logo, which it loads from cdn.redoc.ly, is pointed at the bundle's own copy; a
Content-Security-Policy on both pages lets them reach this origin only.

Why not tornado-swagger (kept in the requirements only for its docstring
convention, which these handlers follow): its UI page loads Swagger UI from
cdnjs, with no option to serve it locally, and it has no ReDoc; ``setup_swagger``
keeps the spec and page in class attributes, i.e. one per process, not per
application (tests run several proxies in one process); and its builder
duplicates apispec's without the error, security and HEAD completion above.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import inspect
import json
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import openapi_ui_bundles
from apispec import APISpec, yaml_utils
from openapi_ui_bundles import redoc, swagger_ui
from tornado import routing, web

from app import __version__
from app.api import schemas
from app.api.base import ApiError, BaseHandler, GatewayKeyMixin, ManagementHandler
from app.api.openai import OpenAIErrors
from app.api.relaying import RelayHandler
from app.auth.service import SESSION_COOKIE, XSRF_COOKIE
from app.logs import app_log

OPENAPI_VERSION = "3.0.3"
# OPTIONS is the CORS preflight of every route (described in ``info``), not an operation of its own.
METHODS = ("get", "head", "post", "put", "patch", "delete")

TAGS = [
    {"name": "gateway", "description": "The Ollama API of the whole fleet, at the root: generation and "
                                       "embeddings go to one node that has the model; listings are merged; "
                                       "pull, delete and copy fan out to the nodes."},
    {"name": "openai", "description": "The OpenAI-compatible `/v1` routes, routed by model like the Ollama ones. "
                                      "Errors take OpenAI's shape."},
    {"name": "nodes", "description": "Register, edit, check and remove Ollama nodes."},
    {"name": "config", "description": "Routing settings, applied live."},
    {"name": "state", "description": "Live fleet state, in-flight requests, events and health."},
    {"name": "models", "description": "Pull and delete models on chosen nodes."},
    {"name": "auth", "description": "Log in and out, tokens, sessions, one's own password."},
    {"name": "users", "description": "People who may use the management API (admin)."},
    {"name": "keys", "description": "API tokens for scripts and gateway keys for clients (admin)."},
    {"name": "usage", "description": "Who used how much (tokens and requests per user, key, model, node, day), "
                                     "the latest requests, and Prometheus metrics."},
    {"name": "docs", "description": "This document and the pages that show it."},
    {"name": "console", "description": "The web console's files (not an API; listed so every route is)."},
]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearerAuth": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access JWT from `POST /api/auth/login` (refresh it with `/api/auth/refresh`), or an "
                       "API token (`avx_…`) created under `/api/proxy/keys`.",
    },
    "cookieAuth": {
        "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
        "description": "The console's session (`POST /api/auth/login` with `\"session\": true`). Unsafe methods "
                       f"must also send the `{XSRF_COOKIE}` cookie's value in `X-XSRFToken`.",
    },
    "gatewayKey": {
        "type": "http", "scheme": "bearer",
        "description": "A gateway key (`avx_gw_…`) for the Ollama and `/v1` routes; needed only when the "
                       "`require_api_key` setting is on (off by default, like Ollama itself).",
    },
}

DESCRIPTION = """\
One address for a fleet of Ollama nodes: the Ollama API at the root and the OpenAI-compatible API under `/v1`
(tags *gateway* and *openai*), and the JSON API that manages the fleet (`/api/proxy/…`, `/api/auth/…`,
`/api/users`).

**Authentication.** Management routes need a login: `Authorization: Bearer <access JWT or API token>`, or the
console's session cookie. Reading needs the `viewer` role, everything else `admin`. Gateway routes are open
unless `require_api_key` is on; then they need `Authorization: Bearer <gateway key>`.

**Errors** are JSON on every route: `{"error": "..."}` (validation errors add `fields`), or OpenAI's
`{"error": {"message", "type", "param", "code"}}` on `/v1`. A stream that fails after it started ends with an
error line (NDJSON) or event (SSE) instead of a status.

**CORS.** Every route answers `OPTIONS` preflights: 204 for an origin in the `cors_origins` setting, 403
otherwise (nothing is allowed by default).
"""


RELAYED_BY = {"description": "The node that served the request.", "schema": {"type": "string"}}


class DocsError(Exception):
    """The route table cannot be documented as it is; the message names the route."""


# -- building -------------------------------------------------------------------------------------------------


def handler_rules(app: web.Application) -> list[tuple[routing.PathMatches, type[web.RequestHandler]]]:
    """The application's routes: (matcher, handler class), in table order."""
    rules = []
    for rule in app.wildcard_router.rules:
        target = rule.target
        if not (isinstance(target, type) and issubclass(target, web.RequestHandler)):
            raise DocsError(f"cannot document a route whose target is not a handler class: {rule}")
        if not isinstance(rule.matcher, routing.PathMatches):
            raise DocsError(f"cannot document a route that does not match on the path: {rule}")
        rules.append((rule.matcher, target))
    return rules


def implemented_methods(handler: type[web.RequestHandler]) -> list[str]:
    return [m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)]


def openapi_path(matcher: routing.PathMatches, handler: type[web.RequestHandler]) -> tuple[str, list[str]]:
    """The route's OpenAPI path template and its path parameters' names, in order."""
    template = matcher._path
    regex = matcher.regex
    if template is None:
        raise DocsError(f"route {regex.pattern!r}: too complex for Tornado to reverse; simplify its groups")
    if regex.groupindex:
        if len(regex.groupindex) != regex.groups:
            raise DocsError(f"route {regex.pattern!r}: name every group or none (Tornado passes named ones only)")
        names = [name for name, _ in sorted(regex.groupindex.items(), key=lambda item: item[1])]
    else:
        names = []
        for method in implemented_methods(handler):
            params = [p.name for p in list(inspect.signature(getattr(handler, method)).parameters.values())[1:]
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:regex.groups]
            if len(params) < regex.groups:
                raise DocsError(f"route {regex.pattern!r}: {handler.__name__}.{method} takes fewer arguments "
                                "than the route has groups")
            if names and params != names:
                raise DocsError(f"route {regex.pattern!r}: {handler.__name__}'s methods name its path "
                                f"arguments differently ({names} vs {params})")
            names = params
    return template % tuple(f"{{{name}}}" for name in names), names


def _yaml(docstring: str | None, where: str) -> dict[str, Any]:
    try:
        loaded = yaml_utils.load_yaml_from_docstring(docstring or "")
    except Exception as exc:
        raise DocsError(f"{where}: the YAML after --- does not parse: {exc}") from None
    if not isinstance(loaded, dict):
        raise DocsError(f"{where}: the YAML after --- must be a mapping")
    return loaded


def find_operation(handler: type[web.RequestHandler], method: str, path: str) -> dict[str, Any] | None:
    """The documented operation of ``method`` on ``path``, from the nearest class that documents it."""
    for cls in handler.__mro__:
        if cls is web.RequestHandler:
            break
        func = cls.__dict__.get(method)
        if func is not None:
            operation = _yaml(getattr(func, "__doc__", None), f"{cls.__qualname__}.{method}")
            if operation:
                return operation
        documented = _yaml(cls.__dict__.get("__doc__"), cls.__qualname__)
        by_path = documented.get(path)
        if isinstance(by_path, dict) and isinstance(by_path.get(method), dict):
            return by_path[method]
        if isinstance(documented.get(method), dict):
            return documented[method]
    return None


def _head_from_get(operation: dict[str, Any]) -> dict[str, Any]:
    head = copy.deepcopy(operation)
    head.pop("requestBody", None)
    if "summary" in head:
        head["summary"] = f"{head['summary']} (headers only)"
    for response in head.get("responses", {}).values():
        if isinstance(response, dict):
            response.pop("content", None)
    return head


def _security(handler: type[web.RequestHandler]) -> list[dict[str, list[str]]]:
    if issubclass(handler, ManagementHandler):
        return [{"bearerAuth": []}, {"cookieAuth": []}]
    if issubclass(handler, GatewayKeyMixin):
        return [{}, {"gatewayKey": []}]
    return []


def _complete(operation: dict[str, Any], handler: type[web.RequestHandler], method: str,
              path: str, names: list[str]) -> dict[str, Any]:
    """Fill in what every operation shares (see the module docstring)."""
    operation = copy.deepcopy(operation)
    parameters = operation.setdefault("parameters", [])
    declared = {p.get("name") for p in parameters if isinstance(p, dict) and p.get("in") == "path"}
    unknown = declared - set(names)
    if unknown:
        raise DocsError(f"{method.upper()} {path}: documents path parameters the route does not have: {unknown}")
    for name in names:
        if name not in declared:
            parameters.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    if not parameters:
        del operation["parameters"]

    error = {"$ref": "#/components/schemas/" + ("OpenAIError" if issubclass(handler, OpenAIErrors) else "Error")}
    # BaseHandler answers every error as JSON; other handlers (the console's files) have their own.
    json_errors = issubclass(handler, BaseHandler) and method != "head"
    body = {"application/json": {"schema": error}} if json_errors else None
    responses = {str(code): response for code, response in (operation.get("responses") or {}).items()}
    for code, response in responses.items():
        if not isinstance(response, dict):
            continue
        if code[:1] in ("4", "5") and "content" not in response and body:
            response["content"] = copy.deepcopy(body)
        if code[:1] == "2" and issubclass(handler, RelayHandler):
            response.setdefault("headers", {}).setdefault("X-Aivonx-Node", RELAYED_BY)
    if "default" not in responses:
        responses["default"] = {"description": "Any other error (invalid JSON, body too large, database "
                                               "unavailable …)"}
        if body:
            responses["default"]["content"] = copy.deepcopy(body)
    operation["responses"] = responses
    operation.setdefault("security", _security(handler))
    return operation


@dataclass
class Collected:
    paths: dict[str, dict[str, dict[str, Any]]]
    schemas: dict[str, dict[str, Any]]
    missing: list[tuple[str, str]]


def collect(app: web.Application) -> Collected:
    """Every route's operations and the component schemas they may use; ``missing`` lists what is undocumented."""
    paths: dict[str, dict[str, dict[str, Any]]] = {}
    found: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for source in (schemas, *(sys.modules[h.__module__] for _, h in handler_rules(app))):
        for name, schema in getattr(source, "SCHEMAS", {}).items():
            if name in found and found[name] != schema:
                raise DocsError(f"component schema {name!r} is defined differently in {owners[name]} "
                                f"and {source.__name__}")
            found[name], owners[name] = schema, source.__name__
    for matcher, handler in handler_rules(app):
        path, names = openapi_path(matcher, handler)
        item = paths.setdefault(path, {})
        for method in implemented_methods(handler):
            if method in item:
                continue  # an earlier route with the same path wins, as in Tornado
            if method == "head" and handler.head is handler.get:  # head = get: the same, without a body
                get = find_operation(handler, "get", path)
                operation = _head_from_get(get) if get is not None else None
            else:
                operation = find_operation(handler, method, path)
            if operation is None:
                missing.append((path, method))
                continue
            item[method] = _complete(operation, handler, method, path, names)
        if not item:
            del paths[path]
    return Collected(paths, found, missing)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes, as a dict."""
    collected = collect(app)
    if collected.missing:
        app_log().warning("undocumented API operations: %s",
                          ", ".join(f"{m.upper()} {p}" for p, m in collected.missing))
    spec = APISpec(title="Aivonx Proxy", version=__version__, openapi_version=OPENAPI_VERSION,
                   info={"description": DESCRIPTION, "license": {"name": "MIT"}})
    for tag in TAGS:
        spec.tag(tag)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name in sorted(collected.schemas):
        spec.components.schema(name, copy.deepcopy(collected.schemas[name]))
    for path, operations in collected.paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


# -- serving --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """A response body kept in memory, with its gzip form and an ETag."""

    data: bytes
    content_type: str
    gz: bytes | None
    etag: str

    @classmethod
    def of(cls, data: bytes, content_type: str, *, compress: bool = True) -> _Blob:
        gz = gzip.compress(data, 6, mtime=0) if compress and len(data) > 1024 else None
        return cls(data, content_type, gz if gz is not None and len(gz) < len(data) else None,
                   '"' + hashlib.sha256(data).hexdigest()[:32] + '"')


_documents: weakref.WeakKeyDictionary[web.Application, asyncio.Future[_Blob]] = weakref.WeakKeyDictionary()


def _document_blob(app: web.Application) -> _Blob:
    data = json.dumps(build_document(app), ensure_ascii=False, separators=(",", ":")).encode()
    return _Blob.of(data, "application/json; charset=utf-8")


async def document_blob(app: web.Application) -> _Blob:
    """The serialised document, built once per application (off the event loop) and kept."""
    future = _documents.get(app)
    if future is None:
        future = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, _document_blob, app))
        _documents[app] = future
    try:
        return await asyncio.shield(future)
    except DocsError:
        _documents.pop(app, None)
        raise


ASSET_VERSION = f"{__version__}-{openapi_ui_bundles.__version__}"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"

# Files served from the bundles: (bundle, name) → (directory, content type).
_BUNDLED: dict[tuple[str, str], tuple[Any, str]] = {
    ("swagger-ui", "swagger-ui-bundle.js"): (swagger_ui.static_path, _JS),
    ("swagger-ui", "swagger-ui.css"): (swagger_ui.static_path, _CSS),
    ("swagger-ui", "favicon-32x32.png"): (swagger_ui.static_path, "image/png"),
    ("swagger-ui", "favicon-16x16.png"): (swagger_ui.static_path, "image/png"),
    ("redoc", "redoc.standalone.js"): (redoc.static_path, _JS),
    ("redoc", "logo-mini.svg"): (redoc.static_path, "image/svg+xml"),
}
# ReDoc's sidebar attribution loads its logo from Redocly's CDN: use the bundle's copy.
_REWRITES: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {
    ("redoc", "redoc.standalone.js"): [(b"https://cdn.redoc.ly/redoc/logo-mini.svg",
                                        f"/docs-assets/redoc/logo-mini.svg?v={ASSET_VERSION}".encode())],
}

SWAGGER_INIT = """\
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  displayRequestDuration: true
});
"""

REDOC_INIT = """\
(function () {
  var element = document.getElementById("redoc");
  Redoc.init(element.getAttribute("data-spec-url"), {
    expandResponses: "200,201",
    pathInMiddlePanel: true,
    sortTagsAlphabetically: false
  }, element);
})();
"""

_OWN: dict[tuple[str, str], tuple[str, str]] = {
    ("swagger-ui", "init.js"): (SWAGGER_INIT, _JS),
    ("redoc", "init.js"): (REDOC_INIT, _JS),
}

SWAGGER_PAGE = f"""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Aivonx Proxy API · Swagger UI</title>
<link rel="stylesheet" href="/docs-assets/swagger-ui/swagger-ui.css?v={ASSET_VERSION}">
<link rel="icon" type="image/png" sizes="32x32" href="/docs-assets/swagger-ui/favicon-32x32.png?v={ASSET_VERSION}">
<link rel="icon" type="image/png" sizes="16x16" href="/docs-assets/swagger-ui/favicon-16x16.png?v={ASSET_VERSION}">
<style>body {{ margin: 0; background: #fafafa; }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs-assets/swagger-ui/swagger-ui-bundle.js?v={ASSET_VERSION}"></script>
<script src="/docs-assets/swagger-ui/init.js?v={ASSET_VERSION}"></script>
</body>
</html>
"""

REDOC_PAGE = f"""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Aivonx Proxy API · ReDoc</title>
<link rel="icon" type="image/svg+xml" href="/docs-assets/redoc/logo-mini.svg?v={ASSET_VERSION}">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<div id="redoc" data-spec-url="/api/openapi.json"></div>
<script src="/docs-assets/redoc/redoc.standalone.js?v={ASSET_VERSION}"></script>
<script src="/docs-assets/redoc/init.js?v={ASSET_VERSION}"></script>
</body>
</html>
"""

# The pages may reach this origin only: no CDN, no telemetry, no online validator.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")

_assets: dict[tuple[str, str], asyncio.Future[_Blob]] = {}


def _asset_blob(key: tuple[str, str]) -> _Blob:
    if key in _OWN:
        text, content_type = _OWN[key]
        return _Blob.of(text.encode(), content_type)
    directory, content_type = _BUNDLED[key]
    data = (directory / key[1]).read_bytes()
    for old, new in _REWRITES.get(key, []):
        data = data.replace(old, new)
    return _Blob.of(data, content_type, compress=not content_type.startswith("image/png"))


async def asset_blob(key: tuple[str, str]) -> _Blob:
    """A bundled file, read and compressed once (off the event loop) and kept."""
    future = _assets.get(key)
    if future is None:
        future = _assets[key] = asyncio.ensure_future(
            asyncio.get_running_loop().run_in_executor(None, _asset_blob, key))
    try:
        return await asyncio.shield(future)
    except OSError:
        _assets.pop(key, None)
        raise


class _DocsHandler(BaseHandler):
    """Public and read-only."""

    cache_control = "no-cache"

    def serve(self, blob: _Blob) -> None:
        self.set_header("Content-Type", blob.content_type)
        self.set_header("Cache-Control", self.cache_control)
        self.set_header("Etag", blob.etag)
        body = blob.data
        if blob.gz is not None:
            self.set_header("Vary", "Accept-Encoding")
            if "gzip" in self.request.headers.get("Accept-Encoding", ""):
                self.set_header("Content-Encoding", "gzip")
                self.set_header("Etag", blob.etag[:-1] + '-gz"')
                body = blob.gz
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(body)

    def compute_etag(self) -> str | None:
        return None  # set in serve(); Tornado need not hash large bodies again


class OpenApiHandler(_DocsHandler):
    async def get(self) -> None:
        """The OpenAPI 3 document of every route (this document).
        ---
        summary: OpenAPI document
        tags: [docs]
        responses:
          "200":
            description: The document; `/api/openapi.json` and `/api/schema` are the same.
            content:
              application/json:
                schema: {type: object, required: [openapi, info, paths],
                         properties: {openapi: {type: string}, info: {type: object}, paths: {type: object}}}
          "304": {description: Not modified (If-None-Match)}
        """
        try:
            blob = await document_blob(self.application)
        except DocsError as exc:
            app_log().error("cannot build the OpenAPI document: %s", exc)
            raise ApiError(500, "the API document cannot be built (see the error log)") from None
        self.serve(blob)


class _PageHandler(_DocsHandler):
    page = ""

    def get(self) -> None:
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        self.serve(_page_blob(type(self).__name__, self.page))


_pages: dict[str, _Blob] = {}


def _page_blob(name: str, page: str) -> _Blob:
    blob = _pages.get(name)
    if blob is None:
        blob = _pages[name] = _Blob.of(page.encode(), "text/html; charset=utf-8")
    return blob


class SwaggerUiHandler(_PageHandler):
    """Swagger UI over this document, from local assets.
    ---
    get:
      summary: Swagger UI
      tags: [docs]
      responses:
        "200":
          description: The Swagger UI page (scripts and styles from /docs-assets/swagger-ui/).
          content:
            text/html:
              schema: {type: string}
        "304": {description: Not modified (If-None-Match)}
    """

    page = SWAGGER_PAGE


class RedocHandler(_PageHandler):
    """ReDoc over this document, from local assets.
    ---
    get:
      summary: ReDoc
      tags: [docs]
      responses:
        "200":
          description: The ReDoc page (scripts from /docs-assets/redoc/).
          content:
            text/html:
              schema: {type: string}
        "304": {description: Not modified (If-None-Match)}
    """

    page = REDOC_PAGE


class AssetHandler(_DocsHandler):
    # Asset URLs carry ?v=<version>, so a new release is fetched anew.
    cache_control = "public, max-age=86400"

    async def get(self, bundle: str, name: str) -> None:
        """A script, stylesheet or image of the documentation pages.
        ---
        summary: Documentation page asset
        tags: [docs]
        parameters:
          - {name: bundle, in: path, required: true, schema: {type: string, enum: [swagger-ui, redoc]}}
          - {name: name, in: path, required: true, schema: {type: string}, example: swagger-ui-bundle.js}
        responses:
          "200":
            description: The file (gzip-encoded when the client accepts it).
            content:
              text/javascript: {schema: {type: string}}
              text/css: {schema: {type: string}}
              image/png: {schema: {type: string, format: binary}}
              image/svg+xml: {schema: {type: string}}
          "304": {description: Not modified (If-None-Match)}
          "404": {description: No such asset}
        """
        key = (bundle, name)
        if key not in _BUNDLED and key not in _OWN:
            raise ApiError(404, "no such documentation asset")
        self.serve(await asset_blob(key))


ROUTES: list[tuple[str, type]] = [
    (r"/api/openapi\.json", OpenApiHandler),
    (r"/api/schema", OpenApiHandler),
    (r"/swagger", SwaggerUiHandler),
    (r"/redoc", RedocHandler),
    (r"/docs-assets/(swagger-ui|redoc)/([^/]+)", AssetHandler),
]
