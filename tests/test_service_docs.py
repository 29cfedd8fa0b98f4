"""/docs: Swagger UI from the files shipped in the package (no CDN, no extra dependency), allowed
by the page's own CSP — the HTTP answers, and the page as headless Chromium renders it from a real
`facegate serve`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import facegate.service
from facegate import __version__
from facegate.service import Settings, create_app
from serve_support import start_serve

ASSETS = Path(facegate.service.__file__).parent / "docs_assets"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("docs") / "data", workers=1), engine=engine)
    with TestClient(app) as c:
        yield c


def test_swagger_ui_licence_ships_beside_it() -> None:
    assert "Apache License" in (ASSETS / "LICENSE").read_text() and "SmartBear" in (ASSETS / "NOTICE").read_text()
    # the version the README names is the one the bundle was built as
    version = re.search(r'PACKAGE_VERSION:"([\d.]+)"', (ASSETS / "swagger-ui-bundle.js").read_text()).group(1)
    assert f"Swagger UI {version}" in (ASSETS / "README.md").read_text()


def test_docs_page_loads_its_assets_from_the_package(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(refs) == ["/docs-assets/favicon-32x32.png", "/docs-assets/swagger-ui-bundle.js",
                            "/docs-assets/swagger-ui.css"]
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for ref in refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        assert r.headers["content-type"].split(";")[0] == types[Path(ref).suffix], ref
        assert r.content == (ASSETS / Path(ref).name).read_bytes(), ref
    assert client.get("/docs-assets/no-such-file.js").status_code == 404


def test_chromium_renders_the_api_under_the_page_csp(tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    served = start_serve(tmp_path / "data", tmp_path, {})
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            refused: list[str] = []
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(f"{served.url}/docs")
            page.wait_for_selector(".swagger-ui .info .title")
            assert page.title() == "facegate API"
            assert page.inner_text(".swagger-ui .info .title").split()[:2] == ["facegate", __version__]
            page.wait_for_selector(".opblock")
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/verify" in t for t in paths), paths
            browser.close()
        assert refused == [] and failed == []
    finally:
        served.stop()
