"""The API token and the console page, on a real broker, real workers and headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.harness import Deployment, Worker, wait_for

pytestmark = pytest.mark.kafka

TOKEN = f"console-test-{uuid.uuid4().hex}"

DEFINITIONS = """
segments:
  - id: buyers
    condition: {performed: Order Completed}
    destinations:
      - {channel: email, traits: [first_name]}
computed_traits:
  - {id: spend, aggregate: sum, event: Order Completed, of: properties.revenue}
"""


def person(name: str, revenue: int) -> list[bytes]:
    uid = f"{name}-{uuid.uuid4().hex[:6]}"
    return [
        orjson.dumps({"type": "identify", "messageId": f"{uid}-1", "userId": uid,
                      "traits": {"email": f"{name.title()}@Example.com", "first_name": name.title(),
                                 "subscriptions": {"email": "subscribed"}},
                      "context": {"consent": {"categoryPreferences": {"Marketing": True}}}}),
        orjson.dumps({"type": "track", "messageId": f"{uid}-2", "userId": uid, "event": "Order Completed",
                      "properties": {"revenue": revenue, "currency": "EUR"}}),
    ]


def call(url: str, token: str | None = None, method: str = "GET", body: bytes | None = None,
         scheme: str = "Bearer") -> tuple[int, str, Any]:
    """(status, content type, parsed JSON or raw bytes) of one HTTP request."""
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            status, ctype, raw = resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get_content_type(), e.read()
    return status, ctype, orjson.loads(raw) if ctype == "application/json" else raw



@dataclass
class Stack:
    d: Deployment
    w: Worker
    ann_id: str


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("console")
    run = f"t{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TUSK_TOPIC_PREFIX": f"{run}.",
           "TUSK_APP_ID": run, "TUSK_PARTITIONS": "4", "TUSK_DATADIR": str(base / "worker"),
           "TUSK_LOG_LEVEL": "info", "TUSK_API_TOKEN": TOKEN}
    defs = base / "defs.yaml"
    defs.write_text(DEFINITIONS)
    d = Deployment(env, base)
    try:
        cli = [sys.executable, "-m", "stream.cli.commands"]
        done = subprocess.run([*cli, "segments", "apply", str(defs), "--no-wait"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        w = d.add_worker()
        # the tail reads from where it was when first asked: start it before any trigger
        wait_for(lambda: call(w.url + "/console/triggers", TOKEN)[2]["status"]["ready"], 30, "the tail")
        d.produce(person("ann", 120))
        d.wait_accounted(2)
        # the email topic is created with the first trigger; the tail finds it within 10 s
        got = wait_for(lambda: call(w.url + "/console/triggers", TOKEN)[2]["triggers"], 60, "a trigger")
        # a lookup right after the first trigger: the worker's producer must still know the
        # changelog topics (its metadata once narrowed to the new activation topic: 500s). The
        # email's link is an L record on the email's own partition, handled after the A that
        # sent the trigger (eventually consistent), so a 404 is waited out; any other status ends it
        status, _, ann = wait_for(lambda: (r := call(w.url + "/profiles/email/ann%40example.com",
                                                     TOKEN))[0] != 404 and r, 30, "ann's email link")
        assert status == 200, ann
        assert [t["profile_id"] for t in got] == [ann["id"]]
        yield Stack(d, w, ann["id"])
    finally:
        d.stop()


def test_api_token(stack: Stack) -> None:
    d, w = stack.d, stack.w
    guarded = ["/profiles/email/ann%40example.com", f"/profiles/id/{stack.ann_id}", "/segments",
               "/segments/buyers", "/segments/buyers/size", "/computed-traits", "/console/triggers",
               "/internal/state", "/no/such/route"]
    for path in guarded:
        status, ctype, body = call(w.url + path)
        assert (status, ctype, body["error"]) == (401, "application/json", "unauthorized"), (path, body)
        assert call(w.url + path, "not-the-token")[0] == 401, path
        assert call(w.url + path, TOKEN[:-1])[0] == 401, path
        if path != "/no/such/route":
            assert call(w.url + path, TOKEN)[0] == 200, path
    assert call(w.url + "/segments", TOKEN, scheme="bearer")[0] == 200
    assert call(w.url + "/segments", TOKEN, scheme="Basic")[0] == 401
    # writes are guarded too (without the token nothing happens)
    assert call(w.url + "/segments/x", method="PUT", body=b"{}")[0] == 401
    erase = b'{"identifier": "email:ann@example.com"}'
    assert call(w.url + "/privacy/erase", method="POST", body=erase)[0] == 401
    assert call(w.url + "/profiles/email/ann%40example.com", TOKEN)[0] == 200
    # open: probes, Prometheus, the console's page (no data in it)
    assert call(w.url + "/health")[0] == 200
    status, ctype, _ = call(w.url + "/metrics")
    assert (status, ctype) == (200, "text/plain")
    status, ctype, page = call(w.url + "/console")
    assert (status, ctype) == (200, "text/html") and b"Tusk console" in page

    # a second worker: lookups and sizes routed between workers carry the token
    w1 = d.add_worker()
    workers = [w, w1]

    d.wait_balanced(120)

    def consistent() -> bool:
        for x in workers:
            status, _, body = call(x.url + "/profiles/email/ann%40example.com", TOKEN)
            if status != 200 or body["id"] != stack.ann_id:
                return False
            status, _, body = call(x.url + "/segments", TOKEN)
            if status != 200 or {s["id"]: s["size"] for s in body["segments"]} != {"buyers": 1}:
                return False
        return True

    wait_for(consistent, 90, "every worker answering with the other's data")
    assert call(w1.url + "/profiles/email/ann%40example.com")[0] == 401


def chromium_binary() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def test_console_in_browser(stack: Stack, tmp_path: Path) -> None:
    exe = chromium_binary()
    if exe is None:
        pytest.skip("no Chromium binary (/usr/bin/chromium or chromium on PATH): "
                    "`apt-get install chromium` (make setup does it when run as root)")
    from PIL import Image, ImageStat
    from playwright.sync_api import expect, sync_playwright

    d, w = stack.d, stack.w
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text
                    else None)
            expect.set_options(timeout=20_000)
            page.goto(w.url + "/console")
            # no token yet: the page asks for one
            expect(page.locator("#token-panel")).to_be_visible()
            page.fill("#token-input", TOKEN)
            page.click("#token-form button[type=submit]")
            expect(page.locator("#token-panel")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('tusk.apiToken')") == TOKEN

            page.select_option("#lookup-type", "email")
            page.fill("#lookup-value", "ANN@example.com")
            page.click("#lookup-form button[type=submit]")
            profile = page.locator("#profile")
            expect(profile).to_contain_text(stack.ann_id)
            expect(page.locator("#profile-segments")).to_contain_text("buyers")
            expect(page.locator("#profile-computed")).to_contain_text("spend")
            expect(page.locator("#profile-computed")).to_contain_text("120")
            expect(page.locator("#profile-identities")).to_contain_text("ann@example.com")
            expect(page.locator("#profile-traits")).to_contain_text("Ann")
            expect(page.locator("#profile-consent")).to_contain_text("granted")
            expect(page.locator("#profile-subscriptions")).to_contain_text("subscribed")
            expect(page.locator("#profile-events")).to_contain_text("Order Completed")
            expect(page.locator("#profile-why-identifiers")).to_contain_text("email:ann@example.com")
            expect(page.locator("#profile-why-segments")).to_contain_text("buyers")

            size = page.locator('#segments-table tr[data-segment="buyers"] td.num')
            expect(size).to_have_text("1")
            triggers = page.locator("#triggers-table tbody tr")
            ann_row = triggers.filter(has_text=stack.ann_id)
            expect(ann_row).to_have_count(1)
            expect(ann_row).to_contain_text("buyers")
            expect(ann_row).to_contain_text("entered")
            expect(ann_row).to_contain_text("email")
            # the tail shows which fields went out, not the address
            expect(page.locator("#triggers-table")).not_to_contain_text("ann@example.com")

            # live: a new buyer shows up in the tail and in the size without reloading
            d.produce(person("bob", 40))
            expect(triggers).to_have_count(2, timeout=60_000)
            expect(size).to_have_text("2", timeout=30_000)
            # a profile id in the tail looks that profile up
            triggers.first.locator("button.link").click()
            expect(page.locator("#profile-identities")).to_contain_text("bob@example.com")
            expect(page.locator("#profile-computed")).to_contain_text("40")

            shot = tmp_path / "console.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as img:
        assert img.width >= 1000 and img.height >= 600, img.size
        grey = img.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 10, "the screenshot is (almost) one colour"
        assert len(grey.getcolors(256) or []) > 20
