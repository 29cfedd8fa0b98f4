"""What the console's browser tests share: a screenshot that also checks the page shows no
leaked placeholders, signing in, and the enrolment form filled in."""

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
