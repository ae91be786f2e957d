"""The brain MRI Space in a real browser (Debian's Chromium via Playwright): analyse a test slice in
the Analysis tab, then ask the Chat tab about it in Spanish; the answer must carry the predicted class
from that analysis (the scan travels between the tabs in a ``gr.State``) and say it is not a diagnosis.
A screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

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
            page.set_input_files("input[type=file]", str(example))
            page.get_by_role("button", name="Analyse").click()
            page.wait_for_selector("#verdict h3", timeout=60_000)
            assert "Brain MRI slice" in page.inner_text("#verdict")
            page.get_by_role("tab", name="Chat / Conversación").click()
            box = page.get_by_role("textbox").last
            box.fill("¿Qué significa mi resultado?")
            box.press("Enter")
            reply = page.locator("[data-testid=bot]").last
            reply.wait_for(timeout=60_000)
            page.wait_for_function("document.querySelector('[data-testid=bot]').innerText.includes('diagnóstico')",
                                   timeout=60_000)
            text = reply.inner_text()
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "test-artifacts" / "brain_chat.png"), full_page=True)
        finally:
            browser.close()
    names = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "tumor hipofisario", "notumor": "sin tumor"}
    assert names[label] in text and "no es un diagnóstico" in text, text


def test_a_new_picture_during_an_analysis_leaves_the_chat_without_a_result(chromium, served, brain_data):
    """Analyse one slice, then put another in before the verdict lands: the analysis of the first is
    cancelled, so neither the verdict nor the chat describes an image no longer shown."""
    from playwright.sync_api import sync_playwright

    _, url = served
    first, second = sorted((brain_data / "examples").glob("*.jpg"))[:2]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector("#notice", timeout=60_000)
            page.set_input_files("input[type=file]", str(first))
            page.get_by_role("button", name="Analyse").click()
            page.set_input_files("input[type=file]", str(second))
            page.wait_for_timeout(8_000)  # far longer than an analysis takes
            verdict = page.inner_text("#verdict")
            page.get_by_role("tab", name="Chat / Conversación").click()
            box = page.get_by_role("textbox").last
            box.fill("What does my result mean?")
            box.press("Enter")
            page.wait_for_function(  # "There is no result yet..." or "The model's most likely class..."
                "/result|model/.test(document.querySelector('[data-testid=bot]')?.innerText)", timeout=60_000)
            text = page.locator("[data-testid=bot]").last.inner_text()
        finally:
            browser.close()
    assert verdict.strip() == "", verdict
    assert "no result yet" in text, text


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

