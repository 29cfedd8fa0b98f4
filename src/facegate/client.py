"""A small typed client for the facegate REST service (httpx).

    >>> from facegate.client import Client
    >>> with Client("http://127.0.0.1:8000", api_key="fg_...") as fg:
    ...     r = fg.verify("selfie.jpg", "id.jpg", purpose="kyc")
    ...     r.decision, r.score, r.threshold

Problems (RFC 9457) are raised as the same ``FacegateError`` subclasses the library raises
(``NoFaceError``, ``ConsentRequiredError``, ``ScopeMissingError`` …), with ``status`` and the
full ``problem`` body attached; an unknown code raises ``ApiError``.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from .errors import FacegateError
from .service.schemas import (
    AuditList,
    AuditReportOut,
    CollectionOut,
    DetectResponse,
    EnrollOut,
    ErasureOut,
    IdentifyOut,
    KeyCreated,
    KeyOut,
    Me,
    PurgeOut,
    SubjectList,
    SubjectOut,
    VerifyResponse,
)

__all__ = ["ApiError", "Client", "ImageArg"]

ImageArg = str | os.PathLike[str] | bytes | IO[bytes]
FaceChoice = int | Sequence[float]  # an index into detect()'s faces, or a box (x, y, w, h)
M = TypeVar("M", bound=BaseModel)


class ApiError(FacegateError):
    """A problem response whose code this client does not know."""

    code = "api_error"


def _problem_error(response: httpx.Response) -> FacegateError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or "api_error")
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase or "request failed")
    from .service.problems import registry

    entry = registry().get(code)
    cls: type[FacegateError] = ApiError
    if entry is not None:
        module, _, name = entry["exception"].rpartition(".")
        import importlib

        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = ApiError
    extras = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail", "code", "instance"}}
    try:
        exc = cls(detail, **extras)
    except TypeError:
        exc = ApiError(detail, **extras)
        exc.code = code
    exc.status = response.status_code  # type: ignore[attr-defined]
    exc.problem = body  # type: ignore[attr-defined]
    return exc


def _image_file(image: ImageArg, name: str) -> tuple[str, bytes, str]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return (name, bytes(image), "application/octet-stream")
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        return (p.name, p.read_bytes(), "application/octet-stream")
    if isinstance(image, io.IOBase) or hasattr(image, "read"):
        filename = getattr(image, "name", name) if isinstance(getattr(image, "name", None), str) else name
        return (filename, image.read(), "application/octet-stream")
    raise TypeError(f"cannot send {type(image).__name__} as an image: pass a path, bytes or a binary file")


def _choice(face: FaceChoice | None, index_field: str, box_field: str) -> dict[str, Any]:
    """A face choice as form fields: an index, or a box as four repeated values."""
    if face is None:
        return {}
    if isinstance(face, int):
        return {index_field: face}
    box = [float(v) for v in face]
    if len(box) != 4:
        raise ValueError("a face box is x, y, width, height")
    return {box_field: box}


def _iso(t: dt.datetime | str | None) -> str | None:
    if t is None or isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.isoformat()


class Client:
    """Synchronous client. ``api_key`` defaults to $FACEGATE_API_KEY; ``base_url`` to
    $FACEGATE_URL or http://127.0.0.1:8000. Thread-safe (one httpx.Client)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None, http: httpx.Client | None = None) -> None:
        base_url = base_url or os.environ.get("FACEGATE_URL") or "http://127.0.0.1:8000"
        key = api_key if api_key is not None else os.environ.get("FACEGATE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        if http is not None and key:
            self._http.headers["Authorization"] = f"Bearer {key}"

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _problem_error(response)
        return response

    def _json(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    @staticmethod
    def _clean(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}

    # --- operations ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz").json()

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def me(self) -> Me:
        return self._json(Me, "GET", "/v1/me")

    # --- stateless biometrics ------------------------------------------------------------------

    def detect(self, image: ImageArg) -> DetectResponse:
        return self._json(DetectResponse, "POST", "/v1/detect", files={"image": _image_file(image, "image")})

    def verify(self, image_a: ImageArg, image_b: ImageArg, *, purpose: str, fmr: float | None = None,
               face_a: FaceChoice | None = None, face_b: FaceChoice | None = None) -> VerifyResponse:
        """Image vs image (scope ``verify``). ``face_a``/``face_b``: the face meant in a photo with
        several faces, an index from :meth:`detect` (or an ``ambiguous_face`` problem's candidates)
        or a box (x, y, width, height)."""
        files = {"image_a": _image_file(image_a, "a"), "image_b": _image_file(image_b, "b")}
        data = {"purpose": purpose, "fmr": fmr, **_choice(face_a, "face_a", "box_a"), **_choice(face_b, "face_b", "box_b")}
        return self._json(VerifyResponse, "POST", "/v1/verify", files=files, data=self._clean(data))

    def verify_subject(self, collection: str, subject: str, image: ImageArg | None = None, *, purpose: str,
                       liveness_session: str | None = None, face: FaceChoice | None = None) -> VerifyResponse:
        """Image (or completed liveness session) vs an enrolled subject; ``face`` chooses the face
        of ``image`` meant, as in :meth:`verify`."""
        data = self._clean({"purpose": purpose, "collection": collection, "subject": subject,
                            "liveness_session": liveness_session, **_choice(face, "face", "box")})
        files = {"image": _image_file(image, "probe")} if image is not None else None
        if files is None:
            return self._json(VerifyResponse, "POST", "/v1/verify", json=data)
        return self._json(VerifyResponse, "POST", "/v1/verify", files=files, data=data)

    def identify(self, collection: str, image: ImageArg | None = None, *, purpose: str, top_k: int = 5,
                 liveness_session: str | None = None, face: FaceChoice | None = None) -> IdentifyOut:
        """1:N search for a declared purpose; ``face`` chooses the face meant, as in :meth:`verify`."""
        data = self._clean({"purpose": purpose, "top_k": top_k, "liveness_session": liveness_session,
                            **_choice(face, "face", "box")})
        path = f"/v1/collections/{_seg(collection)}/identify"
        if image is None:
            return self._json(IdentifyOut, "POST", path, json=data)
        return self._json(IdentifyOut, "POST", path, files={"image": _image_file(image, "probe")}, data=data)

    # --- collections ---------------------------------------------------------------------------

    def collections(self) -> list[CollectionOut]:
        body = self._request("GET", "/v1/collections").json()
        return [CollectionOut.model_validate(c) for c in body["collections"]]

    def create_collection(self, name: str, *, purposes: Sequence[str], fmr: float | None = None,
                          threshold: float | None = None, retention_days: int | None = None,
                          description: str | None = None,
                          liveness_required: Sequence[str] | None = None) -> CollectionOut:
        body = self._clean({"name": name, "purposes": list(purposes), "fmr": fmr, "threshold": threshold,
                            "retention_days": retention_days, "description": description,
                            "liveness_required": list(liveness_required) if liveness_required is not None else None})
        return self._json(CollectionOut, "POST", "/v1/collections", json=body)

    def update_collection(self, name: str, *, liveness_required: Sequence[str] | None = None) -> CollectionOut:
        """Change a collection's settings (admin); a setting left as None keeps its value."""
        body = self._clean({"liveness_required": list(liveness_required) if liveness_required is not None else None})
        return self._json(CollectionOut, "PATCH", f"/v1/collections/{_seg(name)}", json=body)

    def collection(self, name: str) -> CollectionOut:
        return self._json(CollectionOut, "GET", f"/v1/collections/{_seg(name)}")

    def delete_collection(self, name: str) -> ErasureOut:
        return self._json(ErasureOut, "DELETE", f"/v1/collections/{_seg(name)}")

    # --- subjects, consents, enrolment ---------------------------------------------------------

    def subjects(self, collection: str, *, limit: int = 100, offset: int = 0, purpose: str | None = None) -> SubjectList:
        params = self._clean({"limit": limit, "offset": offset, "purpose": purpose})
        return self._json(SubjectList, "GET", f"/v1/collections/{_seg(collection)}/subjects", params=params)

    def subject(self, collection: str, subject: str) -> SubjectOut:
        return self._json(SubjectOut, "GET", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject)}")

    def enroll(self, collection: str, subject: str, images: ImageArg | Iterable[ImageArg] | None = None, *,
               purposes: Sequence[str] | None = None, expires_at: dt.datetime | str | None = None,
               evidence_ref: str | None = None, label: str | None = None,
               liveness_session: str | None = None, dedup_purpose: str | None = None,
               force_mismatch: str | None = None, faces: Sequence[int | None] | None = None) -> EnrollOut:
        """Enrol images; a new subject needs ``purposes`` (its consent). ``dedup_purpose``: look
        for duplicate identities among subjects consenting to it; ``force_mismatch`` (admin
        keys): the reason to accept faces that do not match the subject's. ``faces``: per image,
        the index (from :meth:`detect`) of the face meant, or None for the subject rule."""
        path = f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject)}/faces"
        data = self._clean({"purposes": ",".join(purposes) if purposes else None, "expires_at": _iso(expires_at),
                            "evidence_ref": evidence_ref, "label": label, "liveness_session": liveness_session,
                            "dedup_purpose": dedup_purpose, "force_mismatch": force_mismatch,
                            "faces": None if faces is None else ",".join("null" if f is None else str(int(f)) for f in faces)})
        if images is None:
            if "purposes" in data:
                data["purposes"] = list(purposes or [])
            return self._json(EnrollOut, "POST", path, json=data)
        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or hasattr(images, "read"):
            images = [images]  # type: ignore[list-item]
        files = [("images", _image_file(img, f"image{i}")) for i, img in enumerate(images)]
        return self._json(EnrollOut, "POST", path, files=files, data=data)

    def grant_consent(self, collection: str, subject: str, *, purposes: Sequence[str],
                      expires_at: dt.datetime | str | None = None, evidence_ref: str | None = None) -> SubjectOut:
        body = self._clean({"purposes": list(purposes), "expires_at": _iso(expires_at), "evidence_ref": evidence_ref})
        return self._json(SubjectOut, "POST", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject)}/consents", json=body)

    def withdraw_consent(self, collection: str, subject: str, purpose: str | None = None) -> SubjectOut:
        path = f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject)}/consents"
        return self._json(SubjectOut, "DELETE", path + (f"/{_seg(purpose)}" if purpose else ""))

    def erase_subject(self, collection: str, subject: str, *, reason: str = "request") -> ErasureOut:
        return self._json(ErasureOut, "DELETE", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject)}",
                          params={"reason": reason})

    # --- audit, retention, keys ----------------------------------------------------------------

    def audit(self, *, collection: str | None = None, subject: str | None = None, action: str | None = None,
              since: dt.datetime | str | None = None, until: dt.datetime | str | None = None, limit: int = 100,
              before_seq: int | None = None) -> AuditList:
        params = self._clean({"collection": collection, "subject": subject, "action": action, "since": _iso(since),
                              "until": _iso(until), "limit": limit, "before_seq": before_seq})
        return self._json(AuditList, "GET", "/v1/audit", params=params)

    def audit_verify(self, *, expect_head: str | None = None) -> AuditReportOut:
        return self._json(AuditReportOut, "GET", "/v1/audit/verify", params=self._clean({"expect_head": expect_head}))

    def purge(self, *, dry_run: bool = True) -> PurgeOut:
        return self._json(PurgeOut, "POST", "/v1/purge", params={"dry_run": str(dry_run).lower()})

    def create_key(self, name: str, *, scopes: Sequence[str], collections: Sequence[str] | None = None,
                   expires_at: dt.datetime | str | None = None) -> KeyCreated:
        body = {"name": name, "scopes": list(scopes), "collections": None if collections is None else list(collections),
                "expires_at": _iso(expires_at)}
        return self._json(KeyCreated, "POST", "/v1/keys", json=body)

    def keys(self, *, include_revoked: bool = False) -> list[KeyOut]:
        body = self._request("GET", "/v1/keys", params={"include_revoked": str(include_revoked).lower()}).json()
        return [KeyOut.model_validate(k) for k in body["keys"]]

    def revoke_key(self, name: str) -> KeyOut:
        return self._json(KeyOut, "DELETE", f"/v1/keys/{_seg(name)}")


def wait_ready(base_url: str, *, timeout: float = 60.0, interval: float = 0.3,
               alive: Callable[[], None] | None = None) -> None:
    """Poll ``base_url``/readyz until it answers 200 (a service just started, a deployment
    check). ``alive`` is called before each try and may raise to stop early (e.g. the server
    process exited). Raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            if httpx.get(base_url.rstrip("/") + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{base_url} did not become ready within {timeout:g} s")


def _seg(value: str) -> str:
    """One path segment, percent-encoded so that no id can change the route: '/' and every '.'
    too (httpx, like any RFC 3986 client, drops a literal '.' or '..' segment, which would turn
    "erase subject '..'" into "erase the collection")."""
    from urllib.parse import quote

    if not value:
        raise ValueError("an empty name cannot be sent as a path segment")
    return quote(value, safe="").replace(".", "%2E")
