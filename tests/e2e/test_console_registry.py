"""The console's registry screens in headless Chromium against the real server, with the
public-domain photos in tests/data: bulk enrolment (a manifest refused line by line, a batch run
to its report and its downloads, a long batch cancelled while its rate and time left show) and
de-duplication (the arithmetic before a run, refused over the limit, confirmed within it, the
run's progress, a cluster of the same person registered twice reviewed off the list).
Screenshots: bench/out/screenshots/reg*.png.

The tests run in order and share one signed-in page."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest
from console_support import sign_in, signed_in, snap
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(300)

PEOPLE = {"O1": "obama_1", "O2": "obama_2", "B1": "biden_1", "C1": "collins_1"}  # O1 and O2: one person twice (O3 later)


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def uploads(photos, tmp_path_factory):
    d = tmp_path_factory.mktemp("batches")
    images = {f"{photo}.jpg": photos[photo].read_bytes() for photo in PEOPLE.values()} | {"minutes.jpg": b"minutes, not a photo"}
    (d / "photos.zip").write_bytes(zip_of(images))
    rows = [f"{sid},{photo}.jpg,onboarding,form-{sid}" for sid, photo in PEOPLE.items()] + ["X1,minutes.jpg,onboarding,form-X1"]
    (d / "people.csv").write_text("subject,image,purposes,evidence\n" + "\n".join(rows) + "\n")
    bad = rows[:1] + ["O2,obama_2.jpg,onboarding,"] + ["B1,passport.jpg,onboarding,form-B1"] + rows[3:]
    (d / "bad.csv").write_text("subject,image,purposes,evidence\n" + "\n".join(bad) + "\n")
    # one more photo of the person enrolled as O1 and O2, under a new id, searched for duplicates
    (d / "again.zip").write_bytes(zip_of({"obama_3.jpg": photos["obama_3"].read_bytes()}))
    (d / "again.csv").write_text("subject,image,purposes,evidence\nO3,obama_3.jpg,onboarding,form-O3\n")
    # a long batch: 160 subjects over the four photos
    many = [f"S{i:03d},{list(PEOPLE.values())[i % 4]}.jpg,onboarding,form-S{i:03d}" for i in range(160)]
    (d / "many.csv").write_text("subject,image,purposes,evidence\n" + "\n".join(many) + "\n")
    return d


def test_01_a_manifest_with_bad_lines_is_refused_line_by_line(page: Page, server, uploads, shots):
    with server.api() as admin:
        for name in ("reg", "bulk"):
            r = admin.post("/v1/collections", json={"name": name, "purposes": ["onboarding", "fraud"]})
            assert r.status_code == 201, r.text
    sign_in(page, server.admin_key)
    expect(page.get_by_test_id("whoami")).to_have_text("admin")
    page.goto(server.url + "/#/collections/reg")
    page.get_by_test_id("open-batches").click()
    expect(page.get_by_role("heading", name="Bulk enrolment")).to_be_visible()
    page.get_by_test_id("batch-manifest").set_input_files(str(uploads / "bad.csv"))
    page.get_by_test_id("batch-images").set_input_files(str(uploads / "photos.zip"))
    page.get_by_test_id("batch-start").click()
    errors = page.get_by_test_id("manifest-error")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("3")
    expect(errors.nth(0)).to_contain_text("evidence")
    expect(errors.nth(1)).to_contain_text("4")
    expect(errors.nth(1)).to_contain_text("passport.jpg")
    expect(page.get_by_test_id("batch-refused")).to_contain_text("nothing was enrolled")
    snap(page, shots, "reg01-batch-manifest-refused")
    with server.api() as admin:
        assert admin.get("/v1/collections/reg/batches").json()["batches"] == []
        assert admin.get("/v1/collections/reg/subjects").json()["subjects"] == []


def test_02_a_batch_runs_to_its_report(page: Page, server, uploads, shots, tmp_path):
    page.get_by_test_id("batch-manifest").set_input_files(str(uploads / "people.csv"))
    page.get_by_test_id("batch-start").click()
    expect(page).to_have_url(re.compile(r"#/collections/reg/batches/[0-9a-f]{32}$"))
    expect(page.get_by_test_id("batch-progress")).to_have_attribute("data-status", "succeeded", timeout=120_000)
    expect(page.get_by_test_id("batch-progress-counts")).to_have_text("5 of 5 rows")
    for outcome, n in (("accepted", 4), ("rejected", 1), ("skipped", 0)):
        expect(page.get_by_test_id(f"batch-count-{outcome}")).to_contain_text(f"{n} {outcome}")
    rows = page.get_by_test_id("batch-report-row")
    expect(rows).to_have_count(5)
    expect(rows.filter(has_text="X1")).to_contain_text("rejected")
    expect(rows.filter(has_text="O1").get_by_role("link", name="O1")).to_have_attribute("href", "#/collections/reg/subjects/O1")
    expect(page.get_by_test_id("batch-cancel")).to_be_hidden()
    expect(page.get_by_test_id("batch-row")).to_have_count(1)
    snap(page, shots, "reg02-batch-report")
    with page.expect_download() as got:
        page.get_by_test_id("batch-report-csv").click()
    path = tmp_path / "report.csv"
    got.value.save_as(path)
    report = list(csv.DictReader(path.open()))
    assert [(r["subject"], r["outcome"]) for r in report] == [("O1", "accepted"), ("O2", "accepted"), ("B1", "accepted"),
                                                              ("C1", "accepted"), ("X1", "rejected")]


def test_02b_a_batch_searching_for_duplicates_names_them(page: Page, server, uploads, shots):
    page.goto(server.url + "/#/collections/reg/batches")
    page.get_by_test_id("batch-manifest").set_input_files(str(uploads / "again.csv"))
    page.get_by_test_id("batch-images").set_input_files(str(uploads / "again.zip"))
    page.get_by_test_id("batch-dedup").select_option("onboarding")
    page.get_by_test_id("batch-start").click()
    expect(page.get_by_test_id("batch-progress")).to_have_attribute("data-status", "succeeded", timeout=120_000)
    expect(page.get_by_test_id("batch-count-flagged")).to_contain_text("1 flagged")
    row = page.get_by_test_id("batch-report-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("possible duplicate of")
    for sid in ("O1", "O2"):
        expect(row.get_by_role("link", name=sid, exact=True)).to_have_attribute("href", f"#/collections/reg/subjects/{sid}")
    snap(page, shots, "reg02b-batch-duplicates-named")


def test_03_a_long_batch_shows_its_rate_and_is_cancelled(page: Page, server, uploads, shots):
    page.goto(server.url + "/#/collections/bulk/batches")
    page.get_by_test_id("batch-manifest").set_input_files(str(uploads / "many.csv"))
    page.get_by_test_id("batch-images").set_input_files(str(uploads / "photos.zip"))
    page.get_by_test_id("batch-start").click()
    expect(page.get_by_test_id("batch-progress-rate")).to_contain_text(re.compile(r"rows/s · about .+ left"), timeout=60_000)
    snap(page, shots, "reg03-batch-running")
    page.get_by_test_id("batch-cancel").click()
    expect(page.get_by_test_id("batch-progress")).to_have_attribute("data-status", "cancelled", timeout=60_000)
    expect(page.get_by_test_id("batch-report-row").first).to_be_visible()
    accepted = int(page.get_by_test_id("batch-count-accepted").inner_text().split()[0])
    assert 0 < accepted < 160
    # the rows counted when the batch ended, the report and the list agree
    expect(page.get_by_test_id("batch-progress-counts")).to_have_text(f"{accepted} of 160 rows")
    expect(page.get_by_test_id("batch-report-row")).to_have_count(accepted)
    expect(page.get_by_test_id("batch-row")).to_contain_text("cancelled")
    snap(page, shots, "reg04-batch-cancelled")
    with server.api() as admin:
        jobs = admin.get("/v1/collections/bulk/batches").json()["batches"]
        assert [j["status"] for j in jobs] == ["cancelled"]


def test_04_duplicates_arithmetic_refused_over_the_limit_then_run(page: Page, server, shots):
    page.goto(server.url + "/#/collections/reg")
    page.get_by_test_id("open-duplicates").click()
    expect(page.get_by_role("heading", name="Duplicates")).to_be_visible()
    expect(page.get_by_test_id("clusters-none")).to_have_text("No completed run yet.")
    expect(page.get_by_test_id("dedup-pairs")).to_have_text("10")  # 5 consenting subjects: 5·4/2 pairs
    expect(page.get_by_test_id("dedup-within")).to_be_visible()
    page.get_by_test_id("dedup-limit").fill("0.00001")
    page.get_by_test_id("dedup-limit").dispatch_event("change")
    expect(page.get_by_test_id("dedup-refused")).to_contain_text("over the limit")
    expect(page.get_by_test_id("dedup-start")).to_be_disabled()
    snap(page, shots, "reg05-dedup-refused")
    page.get_by_test_id("dedup-limit").fill("100")
    page.get_by_test_id("dedup-limit").dispatch_event("change")
    expect(page.get_by_test_id("dedup-within")).to_be_visible()
    expect(page.get_by_test_id("dedup-start")).to_be_enabled()
    page.get_by_test_id("dedup-start").click()
    expect(page.get_by_role("dialog")).to_contain_text("10 pairs compared")
    page.get_by_test_id("confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/collections/reg/duplicates/[0-9a-f]+$"))
    expect(page.get_by_test_id("dedup-progress")).to_have_attribute("data-status", "succeeded", timeout=120_000)
    clusters = page.get_by_test_id("cluster")
    expect(clusters).to_have_count(1)
    o1 = clusters.first.get_by_role("link", name="O1", exact=True).first
    expect(o1).to_have_attribute("href", "#/collections/reg/subjects/O1")
    expect(clusters.first.get_by_test_id("cluster-pair").first).to_be_visible()
    assert sorted(clusters.first.locator(".cluster-subjects a").all_inner_texts()) == ["O1", "O2", "O3"]
    snap(page, shots, "reg06-dedup-clusters")


def test_05_a_reviewed_cluster_leaves_the_list(page: Page, server, shots):
    cluster = page.get_by_test_id("cluster").first
    cluster.get_by_test_id("cluster-same").click()
    expect(cluster.get_by_test_id("error")).to_contain_text("note")
    cluster.get_by_test_id("cluster-note").fill("two photos of the same passport holder, checked at the desk")
    cluster.get_by_test_id("cluster-same").click()
    expect(page.get_by_test_id("cluster")).to_have_count(0)
    expect(page.get_by_test_id("clusters-left")).to_have_text("Nothing left to review")
    snap(page, shots, "reg07-dedup-reviewed")
    page.reload()
    expect(page.get_by_test_id("clusters-panel")).to_contain_text("1 reviewed earlier")
    expect(page.get_by_test_id("cluster")).to_have_count(0)
    with server.api() as admin:
        events = admin.get("/v1/audit", params={"collection": "reg", "action": "dedup.review"}).json()["events"]
        assert [(e["decision"], sorted(e["subjects"])) for e in events] == [("same", ["O1", "O2", "O3"])]
        assert events[0]["details"]["note"] == "two photos of the same passport holder, checked at the desk"


def test_06_each_key_sees_what_its_scopes_allow(browser, server, shots):
    """A searcher (identify) reviews clusters but cannot start a run nor bulk-enrol; an enroller
    bulk-enrols but is not shown the clusters, which name people."""
    with server.api() as admin:
        searcher, enroller = (admin.post("/v1/keys", json={"name": name, "scopes": [scope], "collections": ["reg"]}).json()
                              ["secret"] for name, scope in (("reg-searcher", "identify"), ("reg-desk", "enroll")))
    ctx, pg = signed_in(browser, server, searcher, "reg-searcher")
    pg.goto(server.url + "/#/collections/reg")
    expect(pg.get_by_test_id("open-batches")).to_have_count(0)
    pg.get_by_test_id("open-duplicates").click()
    expect(pg.get_by_test_id("dedup-within")).to_be_visible()
    expect(pg.get_by_test_id("dedup-start")).to_have_count(0)
    expect(pg.get_by_text("Starting a run needs an admin key")).to_be_visible()
    expect(pg.get_by_test_id("clusters-panel")).to_contain_text("1 reviewed earlier")
    snap(pg, shots, "reg08-dedup-searcher")
    ctx.close()
    ctx, pg = signed_in(browser, server, enroller, "reg-desk")
    pg.goto(server.url + "/#/collections/reg")
    expect(pg.get_by_test_id("open-duplicates")).to_have_count(0)
    pg.get_by_test_id("open-batches").click()
    expect(pg.get_by_test_id("batch-row").filter(has_text="people.csv")).to_contain_text("finished")
    pg.goto(server.url + "/#/collections/reg/duplicates")
    expect(pg.get_by_test_id("clusters-panel").get_by_test_id("error")).to_contain_text("scope")
    expect(pg.get_by_test_id("cluster")).to_have_count(0)
    ctx.close()
