"""Checks REST responses against protocols/openapi.yaml.

    spec()                                   -> the OpenAPI document (dict), validated once
    validate_response(method, path, status, body, content_type=None, headers=None)
                                             -> the operation's response object; AssertionError
                                                when the status is not documented for the
                                                operation or the body/headers do not match
    validate_error(body)                     -> checks a body against the Error schema
    call(base_url, method, path, ...)        -> performs an HTTP request (http.client) and
                                                validates the answer; returns a Response

`path` may be a template (`/api/v1/rooms/{room}/messages`) or a concrete path
(`/api/v1/rooms/lobby/messages?limit=5`); concrete paths are matched to templates.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import validate as validate_spec

SPEC_PATH = Path(__file__).resolve().parents[2] / "protocols" / "openapi.yaml"
HTTP_TIMEOUT = 15.0


@lru_cache(maxsize=1)
def spec() -> dict:
    with open(SPEC_PATH, "rb") as f:
        doc = yaml.safe_load(f)
    validate_spec(doc)  # raises OpenAPIValidationError when the document itself is invalid
    return doc


def _deref(obj: dict) -> dict:
    """Follows local `$ref`s of OpenAPI objects (responses, headers, parameters)."""
    seen = 0
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), f"only local refs are supported: {ref}"
        node = spec()
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        obj = node
        seen += 1
        assert seen < 20, f"$ref loop at {ref}"
    return obj


def _schema_validator(schema: dict) -> Draft202012Validator:
    # `#/components/...` refs resolve against the document root: give the schema the components.
    root = dict(schema)
    root["components"] = spec()["components"]
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def match_path(path: str) -> str:
    """The spec's path template for a concrete path (query string ignored)."""
    path = urllib.parse.urlsplit(path).path
    paths = spec()["paths"]
    if path in paths:
        return path
    for template in paths:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"path {path!r} is not in openapi.yaml")


def operation(method: str, path: str) -> dict:
    template = match_path(path)
    item = spec()["paths"][template]
    op = item.get(method.lower())
    assert op is not None, f"{method.upper()} {template} is not documented in openapi.yaml"
    return op


def _format_error(e: ValidationError) -> str:
    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
    return f"{e.message} at {where} (schema path {'/'.join(str(p) for p in e.absolute_schema_path)})"


def validate_instance(schema: dict, instance, what: str) -> None:
    errors = sorted(_schema_validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_format_error(e) for e in errors[:10])
        raise AssertionError(f"{what} does not match openapi.yaml:\n  {lines}\nbody: {json.dumps(instance)[:2000]}")


def validate_response(method: str, path: str, status: int, body, content_type: str | None = None,
                      headers: dict | None = None) -> dict:
    """Validates one response; returns the (dereferenced) response object of the spec."""
    op = operation(method, path)
    responses = op.get("responses", {})
    resp = responses.get(str(status))
    what = f"{method.upper()} {match_path(path)} -> {status}"
    assert resp is not None, (f"{what}: status {status} is not documented "
                              f"(documented: {sorted(responses)}); body: {json.dumps(body)[:500]}")
    resp = _deref(resp)

    for name, h in (resp.get("headers") or {}).items():
        h = _deref(h)
        if h.get("required") and headers is not None:
            value = _header(headers, name)
            assert value is not None, f"{what}: required header {name} missing (headers: {headers})"
            if "schema" in h:
                validate_instance(h["schema"], value, f"{what} header {name}")

    content = resp.get("content")
    if not content:
        assert body is None, f"{what}: documented without a body, got {body!r}"
        return resp
    if content_type is not None:
        media = content_type.split(";")[0].strip().lower()
        documented = {k.split(";")[0].strip().lower(): k for k in content}
        assert media in documented, f"{what}: Content-Type {content_type!r}, documented {list(content)}"
        media_obj = content[documented[media]]
    else:
        media_obj = next(iter(content.values()))
    if "schema" in media_obj:
        validate_instance(media_obj["schema"], body, what)
    return resp


def validate_error(body) -> None:
    """For answers outside the documented operations (unknown path, wrong method)."""
    validate_instance({"$ref": "#/components/schemas/Error"}, body, "error body")


def validate_schema(name: str, instance, what: str | None = None) -> None:
    """Validates `instance` against `#/components/schemas/<name>` (e.g. an Envelope from a WS frame)."""
    validate_instance({"$ref": f"#/components/schemas/{name}"}, instance, what or name)


# --------------------------------------------------------------------------------------------
# HTTP


def _header(headers: dict, name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


@dataclass
class Response:
    status: int
    headers: dict
    raw: bytes
    body: object = None          # parsed JSON, or None when there is no JSON body
    text: str = ""
    content_type: str = ""

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self) -> str:
        return f"<{self.status} {self.content_type} {self.raw[:300]!r}>"


def call(base_url: str, method: str, path: str, body=None, *, token: str | None = None,
         raw: bytes | None = None, headers: dict | None = None, validate: bool = True,
         documented: bool = True, timeout: float = HTTP_TIMEOUT) -> Response:
    """One HTTP request. `body` is sent as JSON; `raw` as is. The response is validated against
    the spec (`documented=False`: only the Error schema, for unknown paths and methods)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = {"Accept": "application/json", "Connection": "close"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if raw is not None:
        data = raw
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    try:
        conn.request(method.upper(), path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        resp_headers = {k: v for k, v in r.getheaders()}
        status = r.status
    finally:
        conn.close()
    ctype = _header(resp_headers, "Content-Type") or ""
    resp = Response(status, resp_headers, payload, content_type=ctype)
    resp.text = payload.decode("utf-8", "replace")
    if ctype.split(";")[0].strip().lower() == "application/json":
        try:
            resp.body = json.loads(payload)
        except ValueError as e:
            raise AssertionError(f"{method} {path} -> {status}: Content-Type is JSON but the body is not: "
                                 f"{e}; {payload[:300]!r}") from None
    elif payload:
        resp.body = resp.text if ctype.startswith("text/") else payload
    if status >= 400:
        # Errors are always JSON {"error":{"code","message"}}.
        assert ctype.split(";")[0].strip().lower() == "application/json", \
            f"{method} {path} -> {status}: error with Content-Type {ctype!r}: {payload[:300]!r}"
        validate_error(resp.body)
    if validate:
        if documented:
            body_for_check = resp.body if payload else None
            validate_response(method, path, status, body_for_check, ctype or None, resp_headers)
        elif status >= 400:
            validate_error(resp.body)
    return resp


if __name__ == "__main__":
    spec()
    print(f"{SPEC_PATH}: valid OpenAPI {spec()['openapi']}, {len(spec()['paths'])} paths")
