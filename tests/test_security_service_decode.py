"""Attack: a tiny file that decodes to a huge buffer. A 25-megapixel float TIFF compresses to
~150 KB yet used to cost ~300 MB of RAM to decode, and parallel uploads multiplied that. The
service now reserves each decode's memory (estimated from the header) from one budget; an image
that alone needs more is refused with a 413 problem before a pixel is decoded.
Peak-RSS figures: bench/decode_memory.py."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegate.errors import DecodeMemoryError
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from facegate.vision.decode import DecodeBudget, budget


def float_tiff(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.float32)).save(buf, "TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    settings = Settings(data_dir=tmp_path_factory.mktemp("decode") / "data", workers=2, decode_memory_mb=64,
                        rate_limit_per_s=1000, rate_limit_burst=1000)
    app = create_app(settings, engine=engine)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {ensure_admin_key(app.state.service.gallery)}"}
    budget.configure(None)  # the budget is process-wide


def test_float_tiff_needing_more_than_the_budget_is_refused(svc):
    client, key = svc
    blob = float_tiff(4000)  # 16 Mpx, within the pixel limit; ~112 MB to decode
    assert len(blob) < 200_000
    for route, field in (("/v1/detect", "image"), ("/v1/verify", "image_a")):
        files = {field: ("probe.tiff", blob, "image/tiff")}
        if field == "image_a":
            files["image_b"] = ("b.tiff", blob, "image/tiff")
        r = client.post(route, headers=key, files=files, data={"purpose": "kyc"} if field == "image_a" else None)
        assert r.status_code == 413, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["code"] == "decode_too_large" and body["limit_bytes"] == 64 * 2**20
        assert "MiB" in body["detail"]


def test_normal_photos_still_decode_under_the_budget(svc, photos):
    client, key = svc
    r = client.post("/v1/detect", headers=key, files={"image": photos["obama_1"].read_bytes()})
    assert r.status_code == 200 and r.json()["count"] == 1


def test_decodes_wait_for_room_in_the_budget():
    budget = DecodeBudget(100)
    entered = threading.Event()

    def second() -> None:
        with budget.reserve(70):
            entered.set()

    with budget.reserve(70):
        worker = threading.Thread(target=second)
        worker.start()
        assert not entered.wait(0.3)  # no room while the first decode holds 70 of 100
    assert entered.wait(5)
    worker.join()
    assert budget.held == 0
    with pytest.raises(DecodeMemoryError), budget.reserve(101):
        pass
