"""Request bodies that carry images: multipart upload or JSON with base64, one schema for both.

Every image endpoint accepts either

* ``multipart/form-data`` with the image fields as files and the other fields as form values, or
* ``application/json`` with the image fields as base64 strings (a ``data:image/...;base64,``
  prefix is accepted, so a browser's data URL can be sent as is).

The JSON model describes both; ``openapi_body`` turns it into the OpenAPI requestBody.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.datastructures import UploadFile

from .errors import InvalidRequestError, UnsupportedMediaTypeError, ValidationFailedError

M = TypeVar("M", bound=BaseModel)

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WS = re.compile(r"\s+")


def decode_base64(value: str, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{field} must be a base64 string", field=field)
    text = _WS.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if not text:
        raise InvalidRequestError(f"{field} is empty", field=field)
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii"))
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidRequestError(f"{field} is not valid base64", field=field) from None


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or InvalidRequestError for any hostile shape.

    pydantic-core's parser (not the stdlib's recursive one) bounds nesting depth and integer
    length, insists on UTF-8 and refuses NaN/Infinity; a float literal that overflows to
    infinity is refused here. Nothing of the input reaches Python's recursion limit.
    """
    try:
        data = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidRequestError(f"the body is not valid JSON ({exc})") from None
    if not _finite(data):
        raise InvalidRequestError("the body is not valid JSON (a number is out of range)")
    return data


def _finite(value: Any) -> bool:
    # Depth is bounded by the parser above, so recursing here is safe.
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def validation_problem(exc: ValidationError, where: str = "body") -> ValidationFailedError:
    errors = [
        {"loc": [where, *[str(p) for p in e.get("loc", ())]], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = errors[0] if errors else {"loc": [where], "msg": "invalid"}
    return ValidationFailedError(f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors)


def image_fields_of(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(getattr(model, "__image_fields__", ()))


async def read_payload(request: Request, model: type[M], *, max_images: int = 10) -> tuple[M, dict[str, list[bytes]]]:
    """Parse and validate the body; returns the model (image fields hold their base64/file name)
    and the raw image bytes by field."""
    image_fields = image_fields_of(model)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, list[bytes]] = {}
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()
        data = parse_json(raw) if raw else None
        if not isinstance(data, dict):
            raise ValidationFailedError("the body must be a JSON object",
                                        errors=[{"loc": ["body"], "msg": "must be an object", "type": "dict_type"}])
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        for name in image_fields:
            value = getattr(parsed, name)
            if value is None:
                continue
            encoded = value if isinstance(value, list) else [value]
            images[name] = [decode_base64(v, name) for v in encoded]
    elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=max_images + 2, max_fields=50)
        except Exception as exc:  # noqa: BLE001 - malformed multipart of any kind is the client's fault
            raise InvalidRequestError(f"malformed multipart body: {exc}") from None
        values: dict[str, Any] = {}
        try:
            for key, item in form.multi_items():
                if key in image_fields:
                    if isinstance(item, UploadFile):
                        blob = await item.read()
                    else:  # a browser or curl may send the image as a base64 text field
                        blob = decode_base64(item, key)
                    images.setdefault(key, []).append(blob)
                    if _is_list(model, key):
                        values.setdefault(key, []).append("upload")
                    elif key in values:
                        raise InvalidRequestError(f"{key} given more than once", field=key)
                    else:
                        values[key] = "upload"
                elif isinstance(item, UploadFile):
                    raise InvalidRequestError(f"unexpected file field {key!r}", field=key)
                elif _is_list(model, key):
                    values.setdefault(key, []).extend(v.strip() for v in str(item).split(",") if v.strip())
                else:
                    values[key] = item
        finally:
            await form.close()
        try:
            parsed = model.model_validate(values)
        except ValidationError as exc:
            raise validation_problem(exc) from None
    else:
        raise UnsupportedMediaTypeError(
            "send images as multipart/form-data or as base64 in application/json", content_type=ctype or None
        )
    total = sum(len(v) for v in images.values())
    if total > max_images:
        raise InvalidRequestError(f"{total} images in one request; the limit is {max_images}", limit=max_images)
    for name, blobs in images.items():
        for blob in blobs:
            if not blob:
                raise InvalidRequestError(f"{name} is empty", field=name)
    return parsed, images


def _is_list(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    if field is None:
        return False
    origin = getattr(field.annotation, "__origin__", None)
    text = str(field.annotation)
    return origin is list or text.startswith("list[") or "List[" in text or "list[" in text


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` offering the model as JSON (base64 images) and as multipart (files)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("title", None)
    defs = schema.pop("$defs", {})
    if defs:  # keep models flat so the inline schema stays self-contained
        raise ValueError(f"{model.__name__} must not nest models in an image payload")
    multipart = json.loads(json.dumps(schema))
    for name in image_fields_of(model):
        prop = multipart["properties"][name]
        desc = prop.get("description", "")
        if _is_list(model, name):
            multipart["properties"][name] = {"type": "array", "items": {"type": "string", "format": "binary"},
                                             "description": desc}
        else:
            multipart["properties"][name] = {"type": "string", "format": "binary", "description": desc}
    for prop in multipart["properties"].values():
        # Form values arrive as text; simplify anyOf[null, x] to x for form encoders.
        if "anyOf" in prop:
            options = [o for o in prop["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                extra = {k: v for k, v in prop.items() if k != "anyOf"}
                prop.clear()
                prop.update({**options[0], **extra})
    for name in image_fields_of(model):
        p = schema["properties"][name]
        p.setdefault("contentEncoding", "base64")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": multipart},
            },
        }
    }
