"""The management handlers' docstrings are OpenAPI operations: they build a valid document."""

from __future__ import annotations

from apispec import APISpec
from apispec_webframeworks.tornado import TornadoPlugin
from openapi_spec_validator import validate
from tornado.web import url

from app.api import fleet_config, model_ops, nodes, state

MODULES = (nodes, fleet_config, state, model_ops)


def test_every_management_operation_is_documented_and_the_document_is_valid():
    spec = APISpec(title="Aivonx Proxy", version="test", openapi_version="3.0.3", plugins=[TornadoPlugin()])
    for module in MODULES:
        for name, schema in module.SCHEMAS.items():
            spec.components.schema(name, schema)
    for module in MODULES:
        for pattern, handler, *_ in module.ROUTES:
            spec.path(urlspec=url(pattern, handler))
    document = spec.to_dict()
    validate(document)
    methods = {(path, method) for path, item in document["paths"].items() for method in item}
    for module in MODULES:
        for pattern, handler, *_ in module.ROUTES:
            path = pattern.replace("(?P<node_id>[^/]+)", "{node_id}")
            for method in ("get", "post", "put", "patch", "delete"):
                if getattr(handler, method).__qualname__.startswith("RequestHandler."):
                    continue  # not implemented by this handler
                assert (path, method) in methods, (path, method)
                operation = document["paths"][path][method]
                assert operation["summary"] and operation["tags"] and operation["responses"], (path, method)
