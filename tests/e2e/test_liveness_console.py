"""The console's guided liveness check in headless Debian Chromium against the real `facegate
serve`, with a REAL video as the webcam: Chromium's fake capture device plays the public-domain
clip tests/data/liveness/miranda_motion.mp4, converted here to a temporary .y4m.

What the clip shows: one person facing the camera, then turning to his right (from 0.7 s) and
staying turned; 4.2 s at 10 fps. He does not follow prompts. So:

* a session the server draws at random (2–4 movements) is not live, whatever it asks; the test
  checks that the capture reached the server and that the page shows exactly the decision and
  reasons the server's API returns for that session;
* a deterministic pass: the test inserts a session asking for `turn_right` — the movement the
  clip really performs — into the server's database (the server's own store, shared through the
  database) and answers the console's "new session" request with it. The frames, the check and
  the decision are the real server's. For this run the fake camera plays the clip with its first
  frame held 1 s (a person holding still while the check starts), so that the capture starts
  facing the camera whatever the browser's start-up delay;
* the same camera video a second time is refused (`frame_replayed`), the passed check enrols a
  subject once, a second use is refused;
* camera refused and no camera: the page says so.

Screenshots go to bench/out/screenshots/ (liveness-*.png).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
from console_support import snap
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(600)

CLIP = Path(__file__).resolve().parents[1] / "data" / "liveness" / "miranda_motion.mp4"


def write_y4m(path: Path, hold_first_s: float = 0.0, brightness: int = 0) -> tuple[int, int]:
    """The clip as YUV4MPEG2 (4:2:0) at its own 10 fps, optionally with its first frame held and
    a brightness offset (each run of the camera then has other pixels: the server refuses frames
    identical to an earlier check's as a replay)."""
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if brightness > 0:
            bgr = cv2.add(bgr, np.full_like(bgr, brightness))
        elif brightness < 0:
            bgr = cv2.subtract(bgr, np.full_like(bgr, -brightness))
        frames.append(bgr)
    cap.release()
    assert frames, "the test clip did not decode"
    frames = [frames[0]] * int(round(hold_first_s * 10)) + frames
    hgt, wid = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{wid} H{hgt} F10:1 Ip A1:1 C420jpeg\n".encode())
        for bgr in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
    return wid, hgt


FAKE_CAM = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake-camera")
    paths = {"plain": d / "clip-dark.y4m", "held": d / "clip-held.y4m", "bright": d / "clip-held-bright.y4m",
             "held_dark": d / "clip-held-dark.y4m"}
    write_y4m(paths["plain"], brightness=-4)
    write_y4m(paths["held"], hold_first_s=1.0)
    write_y4m(paths["bright"], hold_first_s=1.0, brightness=4)
    write_y4m(paths["held_dark"], hold_first_s=1.0, brightness=-8)
    return paths


def _context(browser, server):
    ctx = browser.new_context(viewport={"width": 1360, "height": 960}, device_scale_factor=1)
    local = urlparse(server.url).netloc
    ctx.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).scheme in ("data", "blob")
              or urlparse(route.request.url).netloc == local else route.abort())
    ctx.set_default_timeout(30_000)
    return ctx


def _page(ctx, server, errors: list[str]) -> Page:
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.get_by_test_id("apikey").fill(server.admin_key)
    pg.get_by_test_id("signin").click()
    expect(pg.get_by_test_id("whoami")).to_have_text("admin")
    return pg


def _run_check(page: Page, shots: Path, name: str) -> dict:
    """Start a check, screenshot a prompt mid-capture, return the server's decision body."""
    def frames_posted(r) -> bool:
        return r.request.method == "POST" and re.search(r"/v1/liveness/sessions/[^/]+/frames$", r.url) is not None

    with page.expect_response(frames_posted, timeout=90_000) as resp:
        page.get_by_test_id("liveness-start").click()
        expect(page.get_by_test_id("liveness-prompt")).to_be_visible(timeout=20_000)
        page.wait_for_timeout(600)
        snap(page, shots, f"{name}-capturing")
    assert resp.value.status == 200, resp.value.text()
    expect(page.get_by_test_id("liveness-decision")).to_be_visible(timeout=30_000)
    return resp.value.json()


def _server_session(server, sid: str) -> dict:
    with server.api() as c:
        r = c.get(f"/v1/liveness/sessions/{sid}")
    assert r.status_code == 200, r.text
    return r.json()


def _shown_reasons(page: Page) -> list[str]:
    items = page.get_by_test_id("liveness-reasons").locator("li")
    return [items.nth(i).get_attribute("data-reason") for i in range(items.count())]


def _step_states(page: Page) -> list[str | None]:
    steps = page.get_by_test_id("liveness-step")
    return [steps.nth(i).get_attribute("data-state") for i in range(steps.count())]


def test_01_random_session_with_the_real_clip(launch, server, videos, shots):
    """A random server session; the clip's natural motion cannot follow it: not live, and the
    page shows what the server decided."""
    browser = launch(*FAKE_CAM, f"--use-file-for-fake-video-capture={videos['plain']}")
    ctx = _context(browser, server)
    errors: list[str] = []
    page = _page(ctx, server, errors)
    page.get_by_test_id("nav-liveness").click()
    expect(page.get_by_role("heading", name="Liveness check")).to_be_visible()
    snap(page, shots, "liveness-01-start")
    res = _run_check(page, shots, "liveness-02")
    snap(page, shots, "liveness-03-not-live")
    assert res["frames"] >= 20 and res["face_frames"] >= 15  # the camera's frames reached the server
    st = _server_session(server, res["session_id"])
    assert st["state"] == "failed" and st["live"] is False and st["reasons"] == res["reasons"]
    expect(page.get_by_test_id("liveness-badge")).to_have_text("✕ NOT LIVE")
    assert _shown_reasons(page) == st["reasons"]
    assert len(st["challenges"]) >= 2
    expect(page.get_by_test_id("liveness-challenge")).to_have_count(len(st["challenges"]))
    # The step chips end in the server's verdict: each movement met or not, the check failed.
    met = ["done" if c["status"] == "met" else "failed" for c in res["challenges"]]
    assert _step_states(page) == ["done", *met, "failed"]
    expect(page.get_by_test_id("liveness-session-id")).to_have_text(res["session_id"])
    # The camera is off once the frames are captured.
    assert page.evaluate("() => document.querySelector('[data-testid=liveness-video]').srcObject === null")
    ctx.close()
    assert not errors, errors


def _fixed_session(server, challenges: list[str]) -> dict:
    """A session with a chosen challenge, written into the server's own database (the client
    never picks challenges; only a test with database access can)."""
    from facegate.liveness import create_session
    from facegate.liveness.db_store import DatabaseSessionStore

    with server.api() as c:
        me = c.get("/v1/me").json()
    s = create_session(challenges, owner=me["key_id"])
    store = DatabaseSessionStore.open(f"sqlite:///{server.data_dir / 'gallery.db'}")
    try:
        store.add(s)
    finally:
        store.close()
    return {**s.to_dict(include_nonce=True), "upload": {"max_frames": 120, "max_frame_bytes": 2 * 1024 * 1024,
                                                        "recommended_fps": 10.0, "timestamp_unit": "ms_since_unix_epoch"}}


def test_02_pass_enrol_and_single_use(launch, server, videos, shots):
    with server.api() as c:
        assert c.post("/v1/collections", json={"name": "onboarding", "purposes": ["kyc"]}).status_code == 201
    browser = launch(*FAKE_CAM, f"--use-file-for-fake-video-capture={videos['held']}")
    ctx = _context(browser, server)
    errors: list[str] = []
    page = _page(ctx, server, errors)
    page.goto(server.url + "/#/liveness")
    expect(page.get_by_test_id("liveness-start")).to_be_visible()

    def answer_with(session):
        def handler(route):
            if route.request.method == "POST":
                route.fulfill(status=201, content_type="application/json", body=json.dumps(session))
            else:
                route.continue_()
        return handler

    fixed = _fixed_session(server, ["turn_right"])
    page.route("**/v1/liveness/sessions", answer_with(fixed))
    res = _run_check(page, shots, "liveness-04")
    page.unroute("**/v1/liveness/sessions")
    snap(page, shots, "liveness-05-live")
    assert res["session_id"] == fixed["id"]
    assert res["live"] is True, res["reasons"]
    assert [c["status"] for c in res["challenges"]] == ["met"]
    expect(page.get_by_test_id("liveness-badge")).to_have_text("✓ LIVE")
    assert _step_states(page) == ["done", "done", "done"]
    assert _server_session(server, fixed["id"])["state"] == "passed"

    # Enrol with the passed check: the live capture's best frame is the enrolment photo.
    page.get_by_test_id("liveness-use-enrol").click()
    expect(page.get_by_test_id("liveness-probe")).to_contain_text(fixed["id"])
    page.get_by_test_id("enrol-collection").select_option("onboarding")
    page.get_by_test_id("enrol-subject").fill("M-1")
    page.get_by_test_id("enrol-subject").press("Tab")
    page.get_by_test_id("enrol-purpose-kyc").check()
    page.get_by_test_id("enrol-evidence").fill("form-M-1")
    page.get_by_test_id("enrol-attest").check()
    snap(page, shots, "liveness-06-enrol-with-capture")
    page.get_by_test_id("enrol-submit").click()
    expect(page.get_by_test_id("enrol-accepted")).to_contain_text("M-1 enrolled")
    snap(page, shots, "liveness-07-enrolled")
    assert _server_session(server, fixed["id"])["state"] == "consumed"

    # The same check a second time: refused, and the page says why.
    page.goto(server.url + f"/#/verify?mode=subject&collection=onboarding&subject=M-1&liveness={fixed['id']}")
    expect(page.get_by_test_id("liveness-probe")).to_be_visible()
    page.get_by_test_id("verify-subject-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("liveness_session_used")
    snap(page, shots, "liveness-08-used-twice")

    # The same camera video again (identical frames) under a new session: a verbatim replay.
    page.goto(server.url + "/#/liveness")
    again = _fixed_session(server, ["turn_right"])
    page.route("**/v1/liveness/sessions", answer_with(again))
    res2 = _run_check(page, shots, "liveness-09")
    page.unroute("**/v1/liveness/sessions")
    assert res2["live"] is False and "frame_replayed" in res2["reasons"]
    expect(page.get_by_test_id("liveness-reasons")).to_contain_text("already submitted in another check")
    snap(page, shots, "liveness-10-replayed")
    ctx.close()
    assert not errors, errors


def test_03_verify_with_a_passed_check(launch, server, videos, shots):
    """Verify with the live capture against the subject enrolled in test_02. The camera plays the
    clip 4 levels brighter (other pixels: not a verbatim replay of test_02's frames)."""
    browser = launch(*FAKE_CAM, f"--use-file-for-fake-video-capture={videos['bright']}")
    ctx = _context(browser, server)
    errors: list[str] = []
    page = _page(ctx, server, errors)
    page.goto(server.url + "/#/liveness")
    fixed = _fixed_session(server, ["turn_right"])
    page.route("**/v1/liveness/sessions",
               lambda route: route.fulfill(status=201, content_type="application/json", body=json.dumps(fixed))
               if route.request.method == "POST" else route.continue_())
    res = _run_check(page, shots, "liveness-11")
    page.unroute("**/v1/liveness/sessions")
    assert res["live"] is True, res["reasons"]
    page.get_by_test_id("liveness-use-verify").click()
    expect(page.get_by_test_id("liveness-probe")).to_be_visible()
    page.get_by_test_id("verify-collection").select_option("onboarding")
    page.get_by_test_id("verify-subject").fill("M-1")
    page.get_by_test_id("verify-subject-submit").click()
    expect(page.get_by_test_id("decision-badge")).to_have_text("✓ MATCH")
    expect(page.get_by_test_id("verify-liveness")).to_contain_text(fixed["id"])
    snap(page, shots, "liveness-12-verified")
    ctx.close()
    assert not errors, errors


@pytest.mark.parametrize("case", ["refused", "no-camera"])
def test_04_camera_refused_or_missing(launch, server, shots, case):
    if case == "refused":
        args = ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
    else:
        args = ["--use-fake-ui-for-media-stream"]
    browser = launch(*args)
    ctx = _context(browser, server)
    errors: list[str] = []
    page = _page(ctx, server, errors)
    page.goto(server.url + "/#/liveness")
    with server.api() as c:
        before = c.get("/v1/audit", params={"action": "liveness.session_created", "limit": 200}).json()["events"]
    page.get_by_test_id("liveness-start").click()
    msg = "refused" if case == "refused" else "No camera was found"
    expect(page.get_by_test_id("error")).to_contain_text(msg)
    snap(page, shots, f"liveness-13-camera-{case}")
    with server.api() as c:
        after = c.get("/v1/audit", params={"action": "liveness.session_created", "limit": 200}).json()["events"]
    assert len(after) == len(before)  # no session is started without a camera
    ctx.close()
    assert not errors, errors


def test_06_collection_requiring_liveness_for_enrolment(launch, server, videos, shots, photos):
    """A collection created in the console with "Require a liveness check for: enrolment": the
    enrol page offers no photo upload and steers to the liveness check, the server refuses a photo
    (liveness_required), and the passed check enrols the subject (its session in the audit event)."""
    browser = launch(*FAKE_CAM, f"--use-file-for-fake-video-capture={videos['held_dark']}")
    ctx = _context(browser, server)
    errors: list[str] = []
    page = _page(ctx, server, errors)
    page.get_by_test_id("nav-collections").click()
    page.get_by_test_id("new-collection").click()
    page.get_by_test_id("col-name").fill("branch")
    page.get_by_test_id("col-purposes").fill("kyc")
    page.get_by_test_id("col-live-enroll").check()
    snap(page, shots, "liveness-14-new-collection-requiring-liveness")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("col-liveness")).to_contain_text("enrolment")
    with server.api() as c:
        assert c.get("/v1/collections/branch").json()["liveness_required"] == ["enroll"]

    # The enrol page says so and has no photo upload; the server refuses a photo anyway.
    page.get_by_test_id("enrol-here").click()
    expect(page.get_by_test_id("enrol-liveness-required")).to_contain_text("requires a liveness check for enrolment")
    expect(page.get_by_test_id("enrol-picker")).to_be_hidden()
    page.get_by_test_id("enrol-subject").fill("B-1")
    page.get_by_test_id("enrol-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("requires a liveness check")
    snap(page, shots, "liveness-15-enrol-needs-liveness")
    with server.api() as c:
        r = c.post("/v1/collections/branch/subjects/B-1/faces", files={"images": photos["obama_1"].open("rb")},
                   data={"purposes": "kyc"})
    assert r.status_code == 403 and r.json()["code"] == "liveness_required", r.text

    # Steered to the liveness check (the collection carried along); a passed check enrols.
    page.get_by_test_id("enrol-liveness-required-start").click()
    expect(page.get_by_test_id("liveness-start")).to_be_visible()
    fixed = _fixed_session(server, ["turn_right"])
    page.route("**/v1/liveness/sessions",
               lambda route: route.fulfill(status=201, content_type="application/json", body=json.dumps(fixed))
               if route.request.method == "POST" else route.continue_())
    res = _run_check(page, shots, "liveness-16")
    page.unroute("**/v1/liveness/sessions")
    assert res["live"] is True, res["reasons"]
    page.get_by_test_id("liveness-use-enrol").click()
    expect(page.get_by_test_id("liveness-probe")).to_contain_text(fixed["id"])
    expect(page.get_by_test_id("enrol-collection")).to_have_value("branch")
    expect(page.get_by_test_id("enrol-liveness-required")).to_be_hidden()
    page.get_by_test_id("enrol-subject").fill("B-1")
    page.get_by_test_id("enrol-subject").press("Tab")
    page.get_by_test_id("enrol-purpose-kyc").check()
    page.get_by_test_id("enrol-evidence").fill("form-B-1")
    page.get_by_test_id("enrol-attest").check()
    page.get_by_test_id("enrol-submit").click()
    expect(page.get_by_test_id("enrol-accepted")).to_contain_text("B-1 enrolled")
    snap(page, shots, "liveness-17-enrolled-with-required-liveness")
    with server.api() as c:
        ev = [e for e in c.get("/v1/audit", params={"collection": "branch", "action": "enroll"}).json()["events"]
              if e["decision"] == "enrolled"][0]
        assert ev["details"]["liveness"] == "session" and ev["details"]["liveness_session"] == fixed["id"]
        # Identification required too (changed on the collection page): the identify page steers to the check.
        assert c.patch("/v1/collections/branch", json={"liveness_required": ["enroll", "identify"]}).status_code == 200
    page.goto(server.url + "/#/collections/branch")
    expect(page.get_by_test_id("col-liveness")).to_contain_text("enrolment, identification")
    expect(page.get_by_test_id("set-live-identify")).to_be_checked()
    page.goto(server.url + "/#/identify?collection=branch")
    expect(page.get_by_test_id("identify-liveness-required")).to_contain_text("identification")
    expect(page.get_by_test_id("identify-probe")).to_be_hidden()
    snap(page, shots, "liveness-18-identify-needs-liveness")
    ctx.close()
    assert not errors, errors


def test_05_nothing_kept_but_decisions(server):
    """After all of the above: the database holds session states and codes, no frame."""
    import sqlite3

    db = sqlite3.connect(server.data_dir / "gallery.db")
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(liveness_sessions)")]
        assert not {"image", "frame", "best_image", "embedding"} & set(cols)
        states = dict(db.execute("SELECT state, count(*) FROM liveness_sessions GROUP BY state").fetchall())
        assert states.get("consumed", 0) >= 1 and states.get("failed", 0) >= 2
        assert db.execute("SELECT count(*) FROM liveness_frame_digests").fetchone()[0] > 0
    finally:
        db.close()
    assert not list(server.data_dir.rglob("*.jpg")) and not list(server.data_dir.rglob("*.png"))
