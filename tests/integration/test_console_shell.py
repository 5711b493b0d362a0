"""The console's header in a real browser (Debian's Chromium via Playwright, the real Mosquitto and
``jiayuan run``): until the live stream first opens it says it is connecting, not that the
connection was lost. Fixtures and helpers are the console browser test's; the stream being lost
and found again is its restart test's (``.conn.down`` while the service is down).

On SQLite only: the header reads nothing the stores hold differently."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Route, expect

from devtools.launch import ServiceProcess
from tests.integration.test_console_browser import (
    DESK,
    GUARD,
    SHOTS,
    SQLITE_ONLY,
    WAIT_MS,
    Problems,
    browser,
    receiver,
    service,
    sign_in,
)

__all__ = ["browser", "receiver", "service"]  # the fixtures this module uses

pytestmark = pytest.mark.network

STREAM = "**/api/stream"


@SQLITE_ONLY
def test_the_header_says_connecting_until_the_stream_first_opens(
    browser: Browser, service: ServiceProcess
) -> None:
    """A guard just signed in on a slow network read "连接中断，正在重连…" (connection lost) before
    the stream had ever opened. Here the stream is refused twice, then let through."""
    context = browser.new_context(**DESK)
    sign_in(context, service, GUARD)
    page = context.new_page()
    problems = Problems(page)
    refused: list[str] = []

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.abort()

    page.route(STREAM, refuse)
    with page.expect_request(STREAM, timeout=WAIT_MS):
        page.goto(service.url + "/")
    with page.expect_request(STREAM, timeout=WAIT_MS):  # the retry after the first refusal
        pass
    conn = page.locator("[role=status].conn")
    expect(conn).to_have_text("正在连接…", timeout=WAIT_MS)
    expect(conn).not_to_have_class("conn down")
    page.screenshot(path=SHOTS / "desk-connecting.png")
    page.locator("[data-ctl=lang]").click()
    expect(conn).to_have_text("Connecting…", timeout=WAIT_MS)
    assert len(refused) >= 2, refused

    page.unroute(STREAM)
    expect(page.locator(".conn.up")).to_have_text("Live", timeout=WAIT_MS)
    # the refused streams are the browser's only complaints
    assert [p for p in problems.items if "api/stream" not in p] == []
    page.evaluate("localStorage.removeItem('jy.lang')")
    context.close()
