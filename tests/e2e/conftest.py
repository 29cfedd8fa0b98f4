"""End-to-end fixtures: the real `facegate serve` in a subprocess on a free 127.0.0.1 port with a
temp data dir, and Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from serve_support import start_serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "bench" / "out" / "screenshots"
DATA = ROOT / "tests" / "data"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); E2E tests skipped", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")


class Server:
    def __init__(self, url: str, admin_key: str, proc: subprocess.Popen, log: Path, data_dir: Path) -> None:
        self.url, self.admin_key, self.proc, self.log, self.data_dir = url, admin_key, proc, log, data_dir

    def api(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key or self.admin_key}, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    data_dir = tmp_path_factory.mktemp("e2e-data")
    served = start_serve(data_dir, data_dir, {"FACEGATE_RATE_LIMIT_PER_S": "200", "FACEGATE_RATE_LIMIT_BURST": "400"})
    yield Server(served.url, served.admin_key, served.proc, served.log, data_dir)
    code = served.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is 143 (-15 here).
    assert code in (0, -15, 143), f"facegate serve exited with {code}:\n{served.log.read_text()[-2000:]}"
    assert "Application shutdown complete" in served.log.read_text()


@pytest.fixture(scope="module")
def launch():
    """launch(*extra_args) -> a Debian-chromium Browser. Module-scoped: Playwright's sync API runs an
    event loop in this thread while it is alive, which would break asyncio.run() in later tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        opened = []

        def _launch(*extra: str):
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra))
            opened.append(b)
            return b

        yield _launch
        for b in opened:
            b.close()


@pytest.fixture(scope="module")
def browser(launch):
    return launch()


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    return {p.stem: p for p in sorted(DATA.glob("*.jpg"))}


@pytest.fixture(scope="module")
def outside_requests():
    return []


@pytest.fixture(scope="module")
def context(browser, server, outside_requests):
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    local = urlparse(server.url).netloc

    def guard(route):
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob") or parsed.netloc == local:
            return route.continue_()
        outside_requests.append(url)
        return route.abort()

    ctx.route("**/*", guard)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(context, server):
    """One signed-out page per module, kept across its tests (a user's session); no JavaScript error allowed."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    yield pg
    assert not errors, f"JavaScript errors in the console: {errors}"
