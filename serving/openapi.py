"""The OpenAPI document at /docs.json: BentoML's, completed with the error responses the service really
gives and nullable fields in OpenAPI 3.0 form."""

from __future__ import annotations

import json
from typing import Any

from serving.schemas import ErrorResponse

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
    # BentoML names the request/response components `<Model>IODescriptor`; use the model names.
    text = json.dumps(_nullable(spec), ensure_ascii=False)
    for api in service.apis.values():
        for spec_model in (api.input_spec, api.output_spec):
            name = spec_model.__name__
            if name.endswith("IODescriptor"):
                text = text.replace(f'"#/components/schemas/{name}"', f'"#/components/schemas/{name[: -len("IODescriptor")]}"')
                text = text.replace(f'"{name}"', f'"{name[: -len("IODescriptor")]}"')
    return json.loads(text)
