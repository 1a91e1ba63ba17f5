"""Accessibility basics of every console page, checked in Chromium: the lang attribute, landmarks and one
h1, a label for every form field, a name for every button and link, text contrast of at least 4.5:1
(3:1 for large text) against the real background, and keyboard use (skip link first, Tab reaches every
control in document order, a visible focus indicator)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
AUDIT_JS = (HERE / "a11y_audit.js").read_text()  # returns a list of problems


FOCUS_JS = (HERE / "a11y_focus.js").read_text()  # describes the focused element


def audit(page) -> list[str]:
    return page.evaluate(AUDIT_JS)


def keyboard(page, stops: int = 12) -> None:
    page.reload()  # focus navigation starts at the top of a freshly loaded page
    page.keyboard.press("Tab")
    first = page.evaluate(FOCUS_JS)
    assert first is not None and "skip" in (page.evaluate("document.activeElement.className") or ""), first
    last = first["index"]
    for _ in range(stops):
        page.keyboard.press("Tab")
        f = page.evaluate(FOCUS_JS)
        if f is None:
            break
        assert f["outline"], f"no visible focus indicator on {f}"
        assert f["index"] >= last, f"focus order went backwards at {f}"  # a date field has 3 stops
        last = f["index"]
    # the skip link moves focus to the main content
    page.reload()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


@pytest.mark.parametrize("width,height", [(1366, 768), (390, 844)])
def test_every_page_has_labels_landmarks_contrast_and_keyboard_use(world, browser, width, height):
    anonymous = browser(width, height)
    page = anonymous.go("/console/")
    assert audit(page) == []
    keyboard(page)

    clinician = browser(width, height)
    page = clinician.sign_in("doctor-home", "clinician")
    pid = world.patient["id"]
    for path in (
        "/console/find?name=" + world.patient["name"][0]["text"],
        f"/console/patient/{pid}",
        "/console/find?lang=en",
    ):
        clinician.go(path)
        assert audit(page) == [], path
        keyboard(page)
    clinician.go("/console/find?lang=zh")

    resident = browser(width, height)
    page = resident.sign_in("resident", "resident")
    for path in (
        "/console/me",
        "/console/me/results",
        "/console/me/consent",
        "/console/me/access",
        "/console/me/family",
    ):
        resident.go(path)
        assert audit(page) == [], path
    keyboard(page)

    ops = browser(width, height)
    page = ops.sign_in("ops", "operator")
    for path in ("/console/ops", "/console/review", "/console/admin"):
        ops.go(path)
        assert audit(page) == [], path
        keyboard(page)
