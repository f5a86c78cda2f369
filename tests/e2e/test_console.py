"""The operations console in a real browser: headless Chromium (Debian's, provisioned by
``stack/browser.sh``) driven by Selenium against a query API on a real socket, over a
deployment with a running processor, API keys on.

The browser signs in with an admin key, sees each projection's active version, starts
a rebuild of one projection and watches it switch, reads the charts, opens and
re-drives a dead letter the processor made (it leaves the list), and looks up an
order's timeline and the records behind it; then a key with only ``read`` finds every
action disabled, and the API answers it 403. No browser console errors are allowed.
Screenshots of each view are saved under ``.stack/test/artifacts/console/`` (printed).

The browser runs in a thread: the query API serves on this test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from eventfold.settings import Settings
from query_api.admin_access import SESSION_COOKIE, session_token
from stream_processors.dlq_admin import list_dead_letters
from tests.conftest import eventually, isolated_settings
from tests.support.scenario import publish, wait_caught_up
from tests.support.stack import ROOT, StackPorts

ARTIFACTS = ROOT / ".stack" / "test" / "artifacts" / "console"
ADMIN_KEY = f"k-admin-{uuid.uuid4().hex[:12]}"
READER_KEY = f"k-reader-{uuid.uuid4().hex[:12]}"
ORDER = "o-console-1"
WAIT_S = 30.0
NONE = "\u2013"  # what the console shows for nothing (an en dash)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium and chromedriver are not installed: run 'make provision' "
    "(stack/browser.sh installs Debian's chromium and chromium-driver)",
)


@pytest.fixture(scope="module")
def deployment(servers: StackPorts) -> Settings:
    """This module's deployment, with API keys on: one key may act, one may only read."""
    return isolated_settings(
        servers,
        consistency_timeout_s=20.0,
        api_keys={ADMIN_KEY: ["read", "admin"], READER_KEY: ["read"]},
        # a core rebuild waits twice this (the query API's setting; the processor keeps
        # its 0.5 s) before its switch: time enough to abort one from the browser
        targets_ttl_s=2.0,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def order_events() -> list[dict[str, Any]]:
    data = {"order_id": ORDER, "customer_id": "c-console", "currency": "EUR"}
    return [
        {
            "type": "CustomerRegistered",
            "data": {
                "customer_id": "c-console",
                "name": "Console Customer",
                "email": "console@example.com",
                "tier": "gold",
                "country": "DE",
            },
        },
        {
            "type": "OrderPlaced",
            "data": {**data, "items": [{"sku": "C-1", "quantity": 2, "unit_price": "5.00"}]},
        },
        {
            "type": "PaymentAuthorized",
            "data": {
                "payment_id": "p-console",
                "order_id": ORDER,
                "amount": "10.00",
                "currency": "EUR",
                "method": "card",
            },
        },
        {
            "type": "PaymentCaptured",
            "data": {
                "payment_id": "p-console",
                "order_id": ORDER,
                "amount": "10.00",
                "currency": "EUR",
            },
        },
        {
            "type": "OrderShipped",
            "data": {"order_id": ORDER, "carrier": "DHL", "tracking_number": "T-1"},
        },
    ]


async def dead_letter_of_garbage(settings: Settings) -> str:
    """A record the processor cannot decode, published to ``orders``: its dead letter's
    ref, once the processor has dead-lettered it."""
    producer = AIOKafkaProducer(**settings.kafka_client(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("orders"),
            b"\x00\x01 not Avro: the console's dead letter",
            key=b"o-console-garbage",
            headers=[("event-type", b"OrderPlaced"), ("correlation-id", b"corr-console")],
        )
    finally:
        await producer.stop()

    async def pending() -> list[str]:
        views = await list_dead_letters(settings, ("orders",))
        return [v.ref for v in views if v.key == "o-console-garbage" and not v.redriven]

    return (await eventually(pending, within_s=60.0))[0]


class Page:
    """Selenium steps with waits for conditions (never sleeps), and screenshots."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        self.wait = WebDriverWait(
            driver,
            WAIT_S,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        return self.wait.until(condition, message=f"waited {WAIT_S}s for {what}")

    def css(self, selector: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def shown(self, selector: str) -> Any:
        return self.until(
            lambda _: next((e for e in self.all(selector) if e.is_displayed()), None),
            f"{selector} to be shown",
        )

    def click(self, selector: str) -> None:
        """Click once the page settled: a re-render cannot swap the element meanwhile."""
        self.settled()
        self.css(selector).click()

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def sign_in(self, key: str) -> None:
        self.driver.delete_all_cookies()
        self.driver.get(self.base + "/console")
        self.until(lambda d: d.current_url.endswith("/console/login"), "the sign-in form")
        self.css("#key").send_keys(key)
        self.css("form button[type=submit]").click()
        self.until(lambda _: self.all("body[data-ready=true]"), "the console to start")

    def view(self, name: str) -> None:
        self.driver.get(f"{self.base}/console#{name}")
        self.until(lambda _: self.all("body[data-ready=true]"), "the console to start")
        self.shown(f"#view-{name}")
        self.settled()

    def settled(self) -> None:
        """Until the page has no request under way (so nothing re-renders meanwhile)."""
        self.until(lambda _: self.all("body[data-busy='0']"), "the page's requests")

    def confirm(self) -> None:
        self.shown("dialog#confirm[open]")
        self.css("#confirm-ok").click()

    def script(self, code: str) -> Any:
        return self.driver.execute_script(code)

    def errors(self) -> list[str]:
        return [
            f"{e['level']}: {e['message']}"
            for e in self.driver.get_log("browser")
            if e["level"] in ("SEVERE", "WARNING")
        ]


def admin_scenario(page: Page, active: dict[str, str], letter: str, events: int) -> dict[str, str]:
    """Everything an operator with the admin scope does; the versions switched to."""
    page.sign_in(ADMIN_KEY)
    page.view("projections")
    for name, version in active.items():
        cell = f"td[data-active='{name}']"
        page.until(
            lambda _, c=cell, v=version: page.all(c) and page.css(c).text == v, f"{name} {version}"
        )
    page.shot("projections")

    # by keyboard: focus is visible; a confirmation opens on Enter, focused on Cancel,
    # and Escape cancels it: nothing starts
    page.css("body").send_keys(Keys.TAB)
    assert page.script("return document.activeElement.className") == "skip"
    outline = page.script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), f"focus not visible: outline {outline!r}"
    page.css("#rebuild-all").send_keys(Keys.ENTER)
    page.shown("dialog#confirm[open]")
    assert page.script("return document.activeElement.id") == "confirm-cancel"
    page.css("#confirm-cancel").send_keys(Keys.ESCAPE)
    page.until(lambda _: not page.all("dialog#confirm[open]"), "Escape to close it")
    assert page.css("#rebuild").get_attribute("data-state") is None

    # a rebuild aborted while it runs: nothing switches
    page.click("tr[data-projection='orders'] button")
    page.confirm()
    page.until(lambda _: page.css("#rebuild").get_attribute("data-state") == "running", "a rebuild")
    page.click("#abort-rebuild")
    page.confirm()
    page.until(
        lambda _: page.css("#rebuild").get_attribute("data-state") == "aborted",
        "the rebuild to be aborted",
    )
    assert "nothing switched" in page.css("#rebuild-state").text
    building = "td[data-building='orders']"
    page.until(lambda _: page.css(building).text == NONE, "no version being built")
    assert page.css("td[data-active='orders']").text == active["orders"]
    page.shot("rebuild-aborted")

    # a rebuild of one projection, followed live until it switches
    page.click("tr[data-projection='customers'] button")
    page.confirm()
    page.until(
        lambda _: page.css("#rebuild").get_attribute("data-state") == "switched",
        "the rebuild to switch",
    )
    seen = page.css("#rebuild").get_attribute("data-seen")
    assert seen == "running switched", f"the live stream showed {seen!r}"
    switched = page.css("#rebuild-state").text
    assert "customers" in switched and "switched" in switched, switched
    bar = page.css("#rebuild-bar")
    assert float(bar.get_attribute("value")) == float(bar.get_attribute("max")) > 0
    assert page.css("#rebuild-records").text.split(" of ")[0] != "0"
    page.until(
        lambda _: page.css("td[data-active='customers']").text not in ("", active["customers"]),
        "the table to show the new active version of customers",
    )
    new_version = page.css("td[data-active='customers']").text
    page.shot("rebuild-switched")

    # the version it replaced is retired for a grace period: drop it now
    retired = f"#retired-table tr[data-version='{active['customers']}']"
    page.shown(retired)
    page.click(f"{retired} button")
    page.confirm()
    page.until(lambda _: not page.all(retired), "the retired version to be dropped")

    page.view("metrics")
    page.until(lambda _: len(page.all(".chart canvas")) == 4, "four charts")
    rates = re.compile(r"^Now [0-9][0-9,.]* events/s in, [0-9][0-9,.]* out")
    page.until(lambda _: rates.match(page.css("#sum-rate").text), "the rates")
    for chart in page.all(".chart"):
        assert (chart.get_attribute("aria-label") or "").strip(), "a chart without a label"

    def samples(_: Any) -> int:
        return int(page.css("#sum-lag").text.split(" samples")[0])

    shown = samples(None)
    page.until(lambda _: samples(_) > shown, "the charts to refresh with a new sample")
    page.shot("metrics")

    page.view("dead-letters")
    row = f"tr[data-ref='{letter}']"
    page.shown(row)
    page.click(f"{row} th button")
    page.shown("#dlq-detail")
    page.until(lambda _: "dead-lettered" in page.css("#dlq-detail-history").text, "its history")
    assert "o-console-garbage" in page.css("#dlq-detail-facts").text
    assert page.css("#dlq-detail-error").text.strip() not in ("", NONE)
    page.shot("dead-letters")
    page.click(f"{row} td:last-child button")
    page.confirm()
    page.until(lambda _: not page.all(row), "the re-driven letter to leave the list")
    page.shot("dead-letters-redriven")

    # still garbage: the processor dead-letters it again, as a letter whose history
    # starts with the first one; re-driven as a selection this time
    again = "tr[data-key='o-console-garbage']"

    def refreshed(_: Any) -> bool:
        if page.all("#dlq-table[aria-busy]"):
            return False
        if page.all(again):
            return True
        page.click("#dlq-filters button[type=submit]")
        return False

    page.until(refreshed, "the letter dead-lettered again")
    second = f"tr[data-ref='{page.css(again).get_attribute('data-ref')}']"
    page.click(f"{second} th button")
    page.until(lambda _: letter in page.css("#dlq-detail-history").text, "the first letter")
    page.click(f"{second} input[type=checkbox]")
    page.click("#redrive-selected")
    page.confirm()
    page.until(lambda _: not page.all(second), "the selection to leave the list")

    page.view("order")
    page.css("#order-id").send_keys(ORDER)
    page.click("#order-form button")
    page.until(
        lambda _: len(page.all("#timeline-table tbody tr")) == events,
        f"a timeline of {events} events",
    )
    rows = [r.text for r in page.all("#events-table tbody tr")]
    assert len(rows) == events and all(r.startswith(("orders ", "payments ")) for r in rows), rows
    assert "paid" in page.css("#order-summary").text or "shipped" in page.css("#order-summary").text
    page.shot("order")
    return {"customers": new_version}


def reader_scenario(page: Page) -> None:
    """A key with only ``read`` sees everything and can act on nothing."""
    page.click("#sign-out")  # the admin's session ends
    page.until(lambda d: d.current_url.endswith("/console/login"), "the sign-in form")
    assert page.driver.get_cookie(SESSION_COOKIE) is None
    page.sign_in(READER_KEY)
    page.view("projections")
    page.shown("tr[data-projection='orders'] button")
    buttons = page.all("#view-projections button")
    assert buttons and all(not b.is_enabled() for b in buttons), [b.text for b in buttons]
    page.view("dead-letters")
    page.until(lambda _: page.all("#dlq-table tbody tr"), "the dead-letter list")
    assert not page.css("#redrive-selected").is_enabled()
    assert all(not b.is_enabled() for b in page.all("#dlq-table td:last-child button"))
    page.shot("read-only")


async def test_console_in_a_browser(
    deployment: Settings,
    processor: Any,
    query_server: str,
    browser: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventfold.admin")
    events = order_events()
    await publish(deployment, events)
    await wait_caught_up(deployment)
    letter = await dead_letter_of_garbage(deployment)
    order_events_count = len(events) - 1  # the customer's event is not the order's

    async with httpx.AsyncClient(base_url=query_server, timeout=30) as http:
        admin = {"X-API-Key": ADMIN_KEY}
        reader = {"X-API-Key": READER_KEY}
        listed = (await http.get("/v1/admin/projections", headers=reader)).json()
        active = {p["name"]: p["active"] for p in listed["projections"]}
        assert {"orders", "customers", "redis"} <= set(active)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page = Page(browser, query_server, ARTIFACTS)
        switched = await asyncio.to_thread(admin_scenario, page, active, letter, order_events_count)
        listed = (await http.get("/v1/admin/projections", headers=reader)).json()
        assert {p["name"]: p["active"] for p in listed["projections"]}["customers"] == (
            switched["customers"]
        )
        await asyncio.to_thread(reader_scenario, page)
        errors = await asyncio.to_thread(page.errors)
        print(f"\nconsole screenshots: {ARTIFACTS}")
        assert not errors, errors

        # the API: the read key may not act; a browser session may not act without the
        # console's header; without any key nothing is served
        refused = await http.post("/v1/admin/rebuilds", json={}, headers=reader)
        assert refused.status_code == 403, refused.text
        refused = await http.post(
            "/v1/admin/dead-letters/redrive", json={"letters": [letter]}, headers=reader
        )
        assert refused.status_code == 403, refused.text
        cookie = {"Cookie": f"{SESSION_COOKIE}={session_token(ADMIN_KEY)}"}
        forged = await http.delete("/v1/admin/rebuilds/current", headers=cookie)
        assert forged.status_code == 403 and "X-Eventfold-Console" in forged.text, forged.text
        assert (await http.get("/console/assets/console.js")).status_code == 401
        assert (await http.get("/v1/admin/projections")).status_code == 401
        page_without_key = await http.get("/console")
        assert page_without_key.status_code == 303
        assert page_without_key.headers["location"] == "/console/login"
        assert (await http.get("/v1/admin/session", headers=admin)).json()["can_act"] is True

        # every action is logged with the key's name and the caller's correlation id
        traced = {**admin, "X-Correlation-ID": "corr-console-abort"}
        aborted = await http.delete("/v1/admin/rebuilds/current", headers=traced)
        assert aborted.status_code == 200 and aborted.json() == {"aborted": []}
        assert aborted.headers["X-Correlation-ID"] == "corr-console-abort"
        logged = [r.getMessage() for r in caplog.records if r.name == "eventfold.admin"]
        assert any("abort by key k-ad" in m and "corr-console-abort" in m for m in logged), logged
        assert any(m.startswith("admin action rebuild by key k-ad") for m in logged), logged
        assert sum("admin action redrive by key k-ad" in m for m in logged) == 2, logged
