"""The server in a real browser (Debian's Chromium driven by Playwright): a student signs in,
uploads, waits and reads the feedback; an instructor sees the class and downloads the CSV."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.notebooks import submission
from tests.serving import Server, course_toml

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container: no setuid sandbox of Chromium's own, no GPU, nothing fetched.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's browser with "
                    "`apt-get install chromium` (.ci/run does) to run the browser tests")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    # Kept with the test's files; GRADER_SCREENSHOTS names a folder to keep them for a look.
    folder = Path(os.environ.get("GRADER_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / name, full_page=True)


def _sign_in(browser: Browser, server: Server, token: str):
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(f"{server.url}/login")
    page.get_by_label("Your token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_student_submits_and_instructor_downloads(browser: Browser, tmp_path: Path) -> None:
    server = Server(tmp_path / "data", course_toml(
        derivative_calculation="deadline = 2100-01-01T00:00:00Z"))
    tokens = {"ada": server.add("ada", name="Ada Lovelace"),
              "prof": server.add("prof", name="Professor", instructor=True)}
    server.start()
    try:
        # A known misconception: the error's sign flipped.
        notebook = submission(tmp_path, "ada", bodies={
            "delta2": "return (y - y_hat) * sigmoid_prime(z2)"})
        student = _sign_in(browser, server, tokens["ada"])
        expect(student).to_have_url(re.compile(r"/assignments$"))
        student.get_by_role("link", name="Derivative calculation").click()
        student.locator("input[name=notebook]").set_input_files(notebook)
        student.get_by_role("button", name="Submit").click()
        expect(student).to_have_url(re.compile(r"/submissions/\d+$"))
        # The page refreshes itself while the notebook waits, then shows the feedback.
        expect(student.get_by_text("points", exact=False).first).to_be_visible(timeout=300_000)
        expect(student.locator("h2").filter(has_text="delta2")).to_be_visible()
        feedback = student.content()
        assert "ada.ipynb" in feedback and "sigmoid_prime" in feedback
        _screenshot(student, tmp_path, "student-feedback.png")
        student.get_by_role("link", name="All submissions").click()
        expect(student.get_by_role("heading", name=re.compile(r"Score that counts: \d+ \S 22"))
               ).to_be_visible()

        teacher = _sign_in(browser, server, tokens["prof"])
        expect(teacher).to_have_url(re.compile(r"/instructor$"))
        teacher.get_by_role("link", name="Derivative calculation").click()
        row = teacher.locator("tr", has_text="Ada Lovelace")
        expect(row).to_contain_text("graded")
        expect(teacher.locator("img")).to_have_js_property("complete", True)
        expect(teacher.get_by_role("heading", name="Most common misconceptions")).to_be_visible()
        expect(teacher.get_by_text("delta2.", exact=False).first).to_be_visible()
        _screenshot(teacher, tmp_path, "dashboard.png")
        with teacher.expect_download() as download:
            teacher.get_by_role("link", name="grades.csv").click()
        saved = tmp_path / "grades.csv"
        download.value.save_as(saved)
        rows = list(csv.DictReader(saved.open()))
        assert [r["student"] for r in rows] == ["ada"]
        assert 0 < float(rows[0]["score"]) < float(rows[0]["max_score"])
    finally:
        server.stop()
