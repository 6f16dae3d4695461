"""The pages in a real browser (Debian's chromium driven by Playwright): from a check run's "Details"
through GitHub sign-in to the run's cases; a user without read access and a signed-out visitor (both
see the 404 of a page that does not exist, with its link to sign in and come back)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from bot.github.constants import COMMENT_MARKER
from tests.github.fake_github import FakeGitHub
from tests.web.fixtures import REPO, SCREENSHOTS

# A real browser: outside `-m "not slow"`.
pytestmark = pytest.mark.slow

# Debian's chromium (apt-get install chromium): the tests never download a browser.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # No skip: CI installs chromium (.ci/run), and a missing browser is a failure to see.
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        await launched.close()


async def sign_in_from_404(page: Page) -> None:
    """Follow the not-found page's "Sign in with GitHub" (through GitHub and back, when it approves)."""
    await page.click("main a[href^='/login']")
    await page.wait_for_load_state()


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_a_reader_opens_the_run_from_details_and_filters_to_the_regressed_cases(
    evaluated: Any, fake_github: FakeGitHub, browser: Browser, web_url: str
) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    evals = await evaluated()
    details = evals["details_url"]
    assert re.fullmatch(re.escape(web_url) + r"/runs/[A-Za-z0-9_-]{24}", details)
    (comment,) = fake_github.comments.values()
    assert comment["body"].startswith(COMMENT_MARKER) and f"[details]({details})" in comment["body"]

    fake_github.oauth.signing_in = "reader"
    page = await (await browser.new_context()).new_page()
    response = await page.goto(details)
    assert response is not None and response.status == 404
    # Through GitHub's sign-in (PKCE) and back to the run.
    await sign_in_from_404(page)
    assert page.url == details
    assert await page.text_content("header") and "Signed in as reader" in " ".join(
        (await page.text_content("header")).split()
    )
    assert await page.locator("tr.case").count() == 10
    await shot(page, "run-page")

    await page.select_option("#status", "regressed")
    await page.click("#filter")
    await page.wait_for_load_state()
    assert "status=regressed" in page.url
    rows = page.locator("tr.case")
    assert [await rows.nth(i).get_attribute("data-case") for i in range(await rows.count())] == ["c0", "c1"]
    first = rows.nth(0)
    assert (
        await first.locator("td.base pre.output").text_content(),
        await first.locator("td.head pre.output").text_content(),
    ) == ("a0", "head guess 0")
    assert "equals: fail" in " ".join((await first.locator("td.head").text_content() or "").split())
    await shot(page, "run-page-regressed")

    # The suite's history on the default branch: one chart per metric, each point a link to its run.
    await page.click(f"a[href='/repos/{REPO}/suites/qa']")
    await page.wait_for_load_state()
    assert await page.locator(".chart canvas").count() == 4
    assert await page.locator("table.points a").first.get_attribute("href") == details.removeprefix(web_url)
    await shot(page, "suite-page")


async def test_a_user_without_read_access_gets_404(evaluated: Any, fake_github: FakeGitHub, browser: Browser) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    evals = await evaluated()
    fake_github.oauth.signing_in = "stranger"
    page = await (await browser.new_context()).new_page()
    await page.goto(evals["details_url"])
    await sign_in_from_404(page)
    assert page.url == evals["details_url"]
    assert "Signed in as stranger" in " ".join((await page.text_content("header") or "").split())
    assert await page.locator("tr.case").count() == 0 and "head guess" not in await page.content()
    assert ("stranger", REPO) in fake_github.oauth.repo_checks
    await shot(page, "not-found")


async def test_a_signed_out_visitor_gets_404_and_a_way_to_sign_in(
    evaluated: Any, fake_github: FakeGitHub, browser: Browser, web_url: str
) -> None:
    fake_github.oauth.private = {REPO}
    evals = await evaluated()
    fake_github.oauth.signing_in = None  # not signed in to GitHub either: GitHub's form is shown
    page = await (await browser.new_context()).new_page()
    response = await page.goto(evals["details_url"])
    assert response is not None and response.status == 404 and "head guess" not in await page.content()
    await sign_in_from_404(page)
    assert page.url.startswith(f"{fake_github.url}/login/oauth/authorize?client_id=Iv1.fakeclient&redirect_uri=")
    assert "state=" in page.url and await page.text_content("h1") == "Sign in to GitHub"
    await shot(page, "sign-in")
