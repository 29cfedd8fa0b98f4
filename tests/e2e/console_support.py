"""What the console's browser tests share: a screenshot that also checks the page shows no
leaked placeholders, signing in (in this page or another user's browser context), and the
enrolment form filled in."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect


def snap(page: Page, shots: Path, name: str) -> None:
    page.wait_for_timeout(150)  # let canvases paint
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    text = page.locator("body").inner_text()
    leaked = re.findall(r"\b(null|undefined|NaN|\[object Object\])\b", text)
    assert not leaked, f"{name}: the page shows {leaked}"


def sign_in(page: Page, key: str) -> None:
    page.get_by_test_id("apikey").fill(key)
    page.get_by_test_id("signin").click()


def signed_in(browser, server, key: str, who: str):
    """Another user's browser context, signed in with ``key`` (whose name is ``who``)."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    ctx.set_default_timeout(20_000)
    pg = ctx.new_page()
    pg.goto(server.url + "/")
    sign_in(pg, key)
    expect(pg.get_by_test_id("whoami")).to_have_text(who)
    return ctx, pg


def enrol(page: Page, subject: str, photo, purposes=("kyc",), attest=True, collection="bank"):
    """Fill the enrolment form (a fresh one, or 'Enrol another' after a result) and add ``photo``."""
    if "#/enrol" in page.url and page.get_by_test_id("enrol-another").count():
        page.get_by_test_id("enrol-another").click()
    else:
        page.goto(page.url.split("#")[0] + f"#/enrol?collection={collection}")
    expect(page.get_by_role("heading", name="Enrol a subject")).to_be_visible()
    page.get_by_test_id("enrol-subject").fill(subject)
    page.get_by_test_id("enrol-subject").press("Tab")
    for p in purposes:
        page.get_by_test_id(f"enrol-purpose-{p}").check()
    page.get_by_test_id("enrol-evidence").fill(f"form-{subject}")
    if attest:
        page.get_by_test_id("enrol-attest").check()
    page.get_by_test_id("enrol-picker-file").set_input_files(str(photo))
