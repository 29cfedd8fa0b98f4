"""The console when a photo or a search is refused, in headless Chromium against the real server:
the enrolment form will not send a photo the check found no face in, a file that is not an image
stays named with one message about it, a rejected first photo offers no link to a subject that was
never created, refused identifications are in the audit log, and the pages' small layout rules
(stat cards on one line, one mark for an empty cell). Screenshots: bench/out/screenshots/r*.png.

The tests run in order and share one signed-in page."""

from __future__ import annotations

import pytest
from console_support import enrol, sign_in, snap
from PIL import Image
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def files(photos, tmp_path_factory) -> dict[str, object]:
    """Real photos made unusable: the lower part of one (suit and desk, no face), one scaled down
    until its face is too small to enrol, and a text file with a .jpg name."""
    d = tmp_path_factory.mktemp("refusals")
    im = Image.open(photos["biden_1"])
    im.crop((0, im.height - 700, im.width, im.height)).save(d / "no-face.jpg", quality=90)
    small = Image.open(photos["obama_1"])
    small.resize((200, round(200 * small.height / small.width))).save(d / "small-face.jpg", quality=92)
    (d / "notes.jpg").write_text("minutes of the meeting, not a photo\n")
    return {"no_face": d / "no-face.jpg", "small_face": d / "small-face.jpg", "not_an_image": d / "notes.jpg"}


def photo_panel(page: Page):
    return page.locator(".panel", has=page.get_by_test_id("enrol-picker"))


def test_01_collection_stats_fit_their_cards(page, server, shots):
    with server.api() as admin:
        r = admin.post("/v1/collections", json={"name": "bank", "purposes": ["onboarding", "fraud"]})
        assert r.status_code == 201, r.text
    sign_in(page, server.admin_key)
    expect(page.get_by_test_id("whoami")).to_have_text("admin")
    page.goto(server.url + "/#/collections/bank")
    live = page.get_by_test_id("col-liveness")
    expect(live).to_contain_text("not required")
    tops = {round(b["y"]) for b in (s.bounding_box() for s in page.locator(".stats .stat").all()) if b}
    assert len(tops) == 1, f"the stat cards wrap onto {len(tops)} rows"
    heights = [b["height"] for b in (v.bounding_box() for v in page.locator(".stats .stat .v").all()) if b]
    assert len(heights) == 7 and max(heights) < 30, f"a stat value wraps: {heights}"
    snap(page, shots, "r01-collection-stats")


def test_02_enrol_is_held_back_for_a_photo_without_a_face(page, files, shots):
    enrol(page, "C-1", files["no_face"], purposes=("onboarding",))
    subject_field = page.locator("label.field", has=page.get_by_test_id("enrol-subject"))
    expect(subject_field.get_by_test_id("enrol-subject-info")).to_have_text("New subject: consent is required.")
    expect(page.get_by_test_id("enrol-no-face")).to_have_text("No face found in this photo.")
    expect(page.get_by_test_id("enrol-submit")).to_be_disabled()
    expect(page.get_by_test_id("enrol-gate")).to_contain_text("without a face cannot be enrolled")
    snap(page, shots, "r02-enrol-no-face")


def test_03_a_file_that_is_not_an_image_stays_named_with_one_message(page, files, photos, shots):
    panel = photo_panel(page)
    panel.get_by_role("button", name="Replace").click()
    page.get_by_test_id("enrol-picker-file").set_input_files(str(files["not_an_image"]))
    expect(page.get_by_test_id("enrol-picker-file-card")).to_contain_text("notes.jpg")
    expect(page.get_by_test_id("quality-verdict")).to_contain_text("not an image")
    expect(panel.get_by_test_id("error")).to_have_count(1)
    expect(panel).not_to_contain_text("browser can show")
    expect(page.get_by_test_id("enrol-submit")).to_be_disabled()
    snap(page, shots, "r03-enrol-not-an-image")
    # a valid photo replaces it: nothing of the refused file is left
    page.get_by_test_id("enrol-picker-file").set_input_files(str(photos["obama_1"]))
    expect(page.get_by_test_id("quality-verdict")).to_contain_text("Good quality")
    expect(page.get_by_test_id("enrol-picker-file-card")).to_be_hidden()
    expect(page.get_by_test_id("enrol-picker-canvas")).to_be_visible()
    expect(panel.get_by_test_id("error")).to_have_count(0)
    expect(panel).not_to_contain_text("notes.jpg")
    expect(page.get_by_test_id("enrol-submit")).to_be_enabled()
    expect(page.get_by_test_id("enrol-gate")).to_have_text("")
    snap(page, shots, "r04-enrol-valid-after-refused-file")


def test_04_a_rejected_first_photo_says_so_once_and_links_nowhere(page, server, files, shots):
    photo_panel(page).get_by_role("button", name="Replace").click()
    page.get_by_test_id("enrol-picker-file").set_input_files(str(files["small_face"]))
    expect(page.get_by_test_id("quality-verdict")).to_contain_text("will likely be rejected")
    page.get_by_test_id("enrol-submit").click()
    rejected = page.get_by_test_id("enrol-rejected")
    expect(rejected).to_have_text("Photo rejected: Face too small (move closer / higher resolution). "
                                  "Nothing was stored: C-1 was not created.")
    expect(page.get_by_test_id("enrol-open-subject")).to_have_count(0)
    snap(page, shots, "r05-enrol-rejected-new-subject")
    with server.api() as admin:
        assert admin.get("/v1/collections/bank/subjects/C-1").status_code == 404


def test_05_refused_identifications_are_in_the_audit_log(page, server, files, photos, shots):
    page.goto(server.url + "/#/identify?collection=bank")
    page.get_by_test_id("identify-probe-file").set_input_files(str(files["no_face"]))
    page.get_by_test_id("identify-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("no_face")
    with server.api() as admin:  # a purpose the console would not offer, sent by another client
        r = admin.post("/v1/collections/bank/identify", data={"purpose": "marketing"},
                       files={"image": photos["obama_3"].read_bytes()})
        assert r.status_code == 422 and r.json()["code"] == "purpose_not_allowed", r.text
    page.goto(server.url + "/#/audit?action=identify")
    rows = page.get_by_test_id("audit-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("refused_purpose_not_allowed")
    expect(rows.nth(0)).to_contain_text("marketing")
    expect(rows.nth(1)).to_contain_text("refused_no_face")
    expect(rows.nth(1)).to_contain_text("onboarding")
    expect(rows.locator(".chip.bad")).to_have_count(2)
    snap(page, shots, "r06-audit-refused-identifications")


def test_06_an_empty_audit_cell_is_one_mark(page, server, shots):
    page.goto(server.url + "/#/audit")
    expect(page.get_by_test_id("audit-row").first).to_be_visible()
    marks = page.locator("tbody td").evaluate_all(
        "tds => tds.filter(td => td.innerText.trim() === '—' || td.innerText.trim() === '–')"
        ".map(td => [td.innerText.trim(), getComputedStyle(td.firstElementChild || td).fontFamily])")
    assert marks, "the log has empty cells (key.create names no subject)"
    assert len(set(map(tuple, marks))) == 1, set(map(tuple, marks))
    snap(page, shots, "r07-audit-empty-cells")
