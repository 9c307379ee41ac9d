"""The OpenAPI document at /docs.json: BentoML's, completed with the error responses the service really
gives and nullable fields in OpenAPI 3.0 form."""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from serving.schemas import ErrorResponse

DESCRIPTION = (
    "Intent and purchase-intent classification of buyer messages in e-commerce customer-service chats "
    "(Taobao, Tmall, JD), and the lost-shopper nudge (催拍) decision per conversation, made by the same code "
    "and policy as the batch job `buyer-intent flag`. Every answer names the model that gave it."
)

# One request per route, in the buyers' language, shown by Swagger UI and checked against the request
# models and the live app by the tests (authored examples, no real buyer's text).
_TURNS = [
    {"role": "buyer", "text": "这款有L码吗 有的话我今天就下单", "sent_at": "2026-11-20T20:01:00+08:00"},
    {"role": "agent", "text": "亲 L码有货的哦 现在拍下48小时内发货", "sent_at": "2026-11-20T20:02:00+08:00"},
    {"role": "buyer", "text": "好的 能再便宜点吗", "sent_at": "2026-11-20T20:03:00+08:00"},
]
REQUEST_EXAMPLES = {
    "/classify": {"messages": ["在吗 这款黑色的还有货吗", "能便宜点吗 便宜的话我就拍了", "我的快递三天了还没到"], "explain": False},
    "/score_conversation": {
        "conversation": {"conversation_id": "c-1001", "buyer_id": "buyer-88", "shop_id": "shop-1", "messages": _TURNS, "ordered": False}
    },
    "/flag": {
        "conversations": [
            {"conversation_id": "c-1001", "buyer_id": "buyer-88", "shop_id": "shop-1", "category": "女装", "messages": _TURNS, "ordered": False}
        ]
    },
}


def _version() -> str:
    try:
        return importlib.metadata.version("buyer-intent")
    except importlib.metadata.PackageNotFoundError:  # a Bento carries the sources, not the installed package
        return "unversioned"


_EXTRA_RESPONSES = {
    "400": "invalid input: `error` names the field and the reason",
    "413": "request body too large",
    "415": "body is not application/json",
    "429": "too many requests in flight (serving.max_concurrency)",
    "503": "the model is still loading",
    "504": "not answered within serving.timeout_s",
}


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 has no `type: null`: `anyOf: [X, {type: null}]` becomes X with `nullable: true`."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node, "nullable": True}
        else:
            node.update({"anyOf": rest, "nullable": True})
    return node


def openapi_document(service: Any) -> dict[str, Any]:
    """BentoML's OpenAPI document with the error responses this service really gives, request and
    response bodies referring to the full component schemas, and nullable fields in 3.0 form."""
    spec = service.openapi_spec.asdict()
    spec["info"] = {**spec.get("info", {}), "title": "buyer-intent", "version": _version(), "description": DESCRIPTION}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for name, api in service.apis.items():
        operation = spec["paths"][api.route]["post"]
        operation["responses"] = {str(status): response for status, response in operation["responses"].items()}
        for spec_model, target in ((api.input_spec, operation["requestBody"]), (api.output_spec, operation["responses"]["200"])):
            component = spec_model.__name__
            if component in schemas:
                target["content"]["application/json"]["schema"] = {"$ref": f"#/components/schemas/{component}"}
        responses = operation["responses"]
        responses.pop("404", None)
        for status, description in _EXTRA_RESPONSES.items():
            responses[status] = {"description": description, "content": {"application/json": {"schema": error_ref}}}
        responses["500"] = {"description": "unexpected server error", "content": {"application/json": {"schema": error_ref}}}
        operation["requestBody"]["required"] = True
        if api.route in REQUEST_EXAMPLES:
            operation["requestBody"]["content"]["application/json"]["example"] = REQUEST_EXAMPLES[api.route]
    # BentoML names the request/response components `<Model>IODescriptor`; use the model names.
    text = json.dumps(_nullable(spec), ensure_ascii=False)
    for api in service.apis.values():
        for spec_model in (api.input_spec, api.output_spec):
            name = spec_model.__name__
            if name.endswith("IODescriptor"):
                text = text.replace(f'"#/components/schemas/{name}"', f'"#/components/schemas/{name[: -len("IODescriptor")]}"')
                text = text.replace(f'"{name}"', f'"{name[: -len("IODescriptor")]}"')
    return json.loads(text)
