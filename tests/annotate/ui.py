"""A person in the Argilla UI: headless Debian chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def signed_in(api_url: str, username: str, password: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True, viewport={"width": 1500, "height": 1100}
        )
        try:
            page = browser.new_page()
            page.goto(f"{api_url}/sign-in")
            page.fill("input[name=Username]", username)
            page.fill("input[name=Password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "sign-in" not in url)
            yield page
        finally:
            browser.close()


def open_dataset(page, api_url: str, name: str) -> None:
    page.goto(f"{api_url}/")
    page.click(f"text={name}")
    page.wait_for_selector("#decision_accept")
    page.wait_for_load_state("networkidle")


# the record on screen, by its id: the steps field's iframe carries the record as JSON. Not the question heading,
# which several records of one question share (the review sample's CoA set: 24 rows of 18 questions), nor
# insertion order, which the UI does not keep
SHOWN_RECORD = """() => {
  const frame = document.querySelector('iframe[srcdoc]');
  const found = frame && frame.srcdoc.match(/"external_id":"([^"]+)"/);
  return found ? found[1] : null;
}"""


def shown_record(page) -> str | None:
    """The id of the record on screen (``annotate.render.record_id``), None when none is shown."""
    return page.evaluate(SHOWN_RECORD)


def decide(page, decision: str, corrected_answer: str = "") -> None:
    """Pick the decision label, optionally type a corrected answer, Submit, and wait for the next record."""
    before = shown_record(page)
    assert before, "no record on screen to decide"
    if not page.is_checked(f"#decision_{decision}"):  # the scorers' suggestion may have picked it already
        page.click(f"label[for=decision_{decision}]")
    if corrected_answer:
        # text questions are contenteditable paragraphs, in question order: corrected_answer comes first
        box = page.locator("p[contenteditable=true]").first
        box.click()
        box.type(corrected_answer)
    submit = page.get_by_role("button", name="Submit")
    try:
        with page.expect_request(is_submission, timeout=15_000) as sent:
            submit.click()
    except PlaywrightTimeout:
        # seen once in a fresh-clone run: a click that landed before the form took the typed answer sent nothing;
        # clicking again only when no submission left keeps a slow server from getting the next record decided
        with page.expect_request(is_submission) as sent:
            submit.click()
    response = sent.value.response()
    assert response is not None and response.ok, f"the decision was not stored: {response and response.status}"
    page.wait_for_function(f"shown => ({SHOWN_RECORD})() !== shown", arg=before, timeout=60_000)


def is_submission(request) -> bool:
    """The UI's Submit: one POST of a submitted response to its record (drafts are saved with another status)."""
    return (
        request.method == "POST" and request.url.endswith("/responses") and '"submitted"' in (request.post_data or "")
    )
