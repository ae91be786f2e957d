"""The brain MRI Space in a real browser (Debian's Chromium via Playwright): a test slice is analysed as it
lands in the Analysis tab, then the Chat tab is asked about it in Spanish; the answer must carry the
predicted class from that analysis (the scan travels between the tabs in a ``gr.State``) and say it is not a
diagnosis. A screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

import time

import pytest
from conftest import ROOT, free_port, space_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(brain_models):
    with space_app("brain_mri", "brain_browser_app", IMAGEZOO_MODEL=str(brain_models / "brain-tumor-type"),
                   IMAGEZOO_GATE=str(brain_models / "brain-mri-gate")) as module:
        port = free_port()
        module.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield module, f"http://127.0.0.1:{port}"
        finally:
            module.demo.close()


SPANISH_NAMES = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "tumor hipofisario",
                 "notumor": "sin tumor"}


def ask(page, question: str) -> str:
    """The chat tab's answer to ``question`` about the last analysis."""
    page.get_by_role("tab", name="Chat / Conversación").click()
    box = page.get_by_role("textbox").last
    box.fill(question)
    box.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=bot]')?.innerText.includes('diagnóstico')",
                           timeout=60_000)
    return page.locator("[data-testid=bot]").last.inner_text()


def test_the_chat_explains_the_analysis_just_run(chromium, served, brain_data):
    from playwright.sync_api import sync_playwright

    module, url = served
    example = sorted((brain_data / "examples").glob("*.jpg"))[0]
    label = module.analyse_upload(str(example))[4]["label"]  # what the same app says of it, outside the browser
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load")
            assert "never a diagnosis" in page.inner_text("#notice", timeout=60_000)
            # a slow upload (a large file, a slow network): the analysis starts when the file has landed
            page.route("**/upload**", lambda route: (time.sleep(1.5), route.continue_()))
            page.set_input_files("input[type=file]", str(example))
            page.wait_for_selector("#verdict h3", timeout=60_000)
            assert "Brain MRI slice" in page.inner_text("#verdict")
            text = ask(page, "¿Qué significa mi resultado?")
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "test-artifacts" / "brain_chat.png"), full_page=True)
        finally:
            browser.close()
    assert SPANISH_NAMES[label] in text and "no es un diagnóstico" in text, text


def test_a_new_picture_during_an_analysis_leaves_only_its_own_result(chromium, served, brain_data):
    """Put a second slice in while the first is being analysed: the verdict and the chat end up describing
    the second, the picture shown, never the first."""
    from playwright.sync_api import sync_playwright

    module, url = served
    first, second = sorted((brain_data / "examples").glob("*.jpg"))[:2]
    (_, *_, before), (shown, *_, after) = (module.analyse_upload(str(path)) for path in (first, second))
    assert before["label"] != after["label"]  # one example per class
    expected = " ".join(shown.replace("### ", "").replace("**", "").split())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector("#notice", timeout=60_000)
            page.set_input_files("input[type=file]", str(first))
            page.set_input_files("input[type=file]", str(second))
            page.wait_for_timeout(8_000)  # far longer than two analyses take
            verdict = " ".join(page.inner_text("#verdict").split())
            text = ask(page, "¿Qué significa mi resultado?")
        finally:
            browser.close()
    assert verdict == expected
    assert SPANISH_NAMES[after["label"]] in text, text
    if after["decisive"]:  # a tie names both classes
        assert SPANISH_NAMES[before["label"]] not in text, text


def test_a_follow_up_question_is_answered_about_the_tumour_asked_before(chromium, served):
    """The history Gradio hands the chat, in the shape the browser really sends it: "What symptoms can it
    cause?" after "What is a pituitary adenoma?" is about pituitary tumours (asked alone: meningiomas)."""
    from playwright.sync_api import sync_playwright

    _, url = served
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Chat / Conversación").click()
            box = page.get_by_role("textbox").last
            for n, question in enumerate(["What is a pituitary adenoma?", "What symptoms can it cause?"], start=1):
                box.fill(question)
                box.press("Enter")
                page.wait_for_function(f"document.querySelectorAll('[data-testid=bot]').length >= {n} && "
                                       "document.querySelectorAll('[data-testid=bot]')[" + str(n - 1) + "]"
                                       ".innerText.includes('Sources')", timeout=60_000)
            first, second = (page.locator("[data-testid=bot]").nth(i).inner_text() for i in range(2))
        finally:
            browser.close()
    assert "A pituitary tumour is an abnormal growth" in first, first
    # the answer is the pituitary passage; asked alone, the meningioma one (its sources list both titles)
    assert "Symptoms come from two things." in second and "Many meningiomas cause no symptoms" not in second, second

