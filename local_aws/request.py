"""What the server needs to know of a request: its service, action, account and region, and a
presigned POST's form."""

from __future__ import annotations

import io
import json
import re
import urllib.parse
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/")


class Request:
    """What the store needs to know about one request."""

    def __init__(self, environ: dict[str, Any], body: bytes, service: str) -> None:
        self.environ = environ
        self.body = body
        self.service = service
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query = environ.get("QUERY_STRING", "")
        access_key, region = self._credential()
        self.access_key = access_key
        self.region = region
        self.action = self._action()

    def _credential(self) -> tuple[str, str]:
        found = _CREDENTIAL.search(self.environ.get("HTTP_AUTHORIZATION", ""))
        if found:
            return found.group(1), found.group(2)
        query = urllib.parse.parse_qs(self.query)
        credential = (query.get("X-Amz-Credential") or [""])[0].split("/")
        if len(credential) >= 3:
            return credential[0], credential[2]
        return "", "us-east-1"

    def _action(self) -> str:
        target = self.environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return target.rsplit(".", 1)[-1]
        if self.environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") and self.body:
            form = urllib.parse.parse_qs(self.body.decode("utf-8", "replace"))
            if "Action" in form:
                return form["Action"][0]
        query = urllib.parse.parse_qs(self.query)
        return (query.get("Action") or [""])[0]

    def json_body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class PostForm:
    """A presigned POST's form: its fields (names lower-cased, as S3 compares them) and its file."""

    def __init__(self, fields: dict[str, str], filename: str, size: int) -> None:
        self.fields = fields
        self.filename = filename
        self.size = size

    @classmethod
    def parse(cls, content_type: str, body: bytes) -> "PostForm":
        from werkzeug.formparser import parse_form_data

        environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body)}
        _, form, files = parse_form_data(environ)
        upload = files.get("file")
        size = 0
        if upload is not None:
            upload.stream.seek(0, io.SEEK_END)
            size = upload.stream.tell()
        return cls({name.lower(): value for name, value in form.items()},
                   (upload.filename or "") if upload is not None else "", size)

    @property
    def key(self) -> str:
        return self.fields.get("key", "").replace("${filename}", self.filename)

    def broken_condition(self, conditions: list[Any], bucket: str) -> str | None:
        """The first condition of the policy the form breaks, in words; None when it keeps them all."""
        checks: list[tuple[str, str, Any]] = []
        for condition in conditions:
            if isinstance(condition, dict):
                checks += [("eq", name, value) for name, value in condition.items()]
            elif isinstance(condition, list) and condition and condition[0] == "content-length-range":
                low, high = int(condition[1]), int(condition[2])
                if not low <= self.size <= high:
                    return f"the file is {self.size} bytes; it must be {low} to {high}"
            elif isinstance(condition, list) and len(condition) == 3:
                checks.append((str(condition[0]).lower(), str(condition[1]).lstrip("$"), condition[2]))
            else:
                return "a condition cannot be read"
        for operator, name, value in checks:
            actual = bucket if name.lower() == "bucket" else self.key if name.lower() == "key" \
                else self.fields.get(name.lower(), "")
            if operator == "eq" and actual != value:
                return f"{name} must be {value!r}"
            if operator == "starts-with" and not actual.startswith(value):
                return f"{name} must start with {value!r}"
            if operator not in ("eq", "starts-with"):
                return f"unknown condition {operator!r}"
        return None


def is_form(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def is_post_upload(method: str, query: str, content_type: str) -> bool:
    """S3's browser-style upload: a form POSTed to the bucket itself, no subresource."""
    return method.upper() == "POST" and not query and is_form(content_type)


def read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.strip().isdigit():
        return stream.read(int(length)) if int(length) else b""
    if environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return stream.read()
    return b""
