"""The web chat page in headless Chromium: type a message, watch the reply stream in, see tokens/s.

Needs Debian's `chromium` + `chromium-driver` and the `selenium` package; skips with the reason otherwise.
Selenium is pointed at the system chromedriver, so nothing is downloaded.
"""

import shutil
import time

import pytest

from tinylm.infer.engine import Batch, Engine
from tinylm.serve.app import create_app

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
pytestmark = [
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) and shutil.which(DRIVER)),
        reason=f"{CHROMIUM} or {DRIVER} missing (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (
        "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    )
    for flag in flags.split() + ["--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def text(element) -> str:
    """All of an element's text, including characters a random model emits that render invisibly."""
    return element.get_attribute("textContent")


def test_type_a_message_and_see_a_streamed_reply(tiny_checkpoint, browser, monkeypatch, live_server):
    from selenium.webdriver.common.by import By

    step = Batch.step
    monkeypatch.setattr(Batch, "step", lambda self: time.sleep(0.01) or step(self))  # time to watch it grow
    live = live_server(create_app(Engine.load(tiny_checkpoint), "tiny"))
    try:
        browser.get(live.url + "/")
        wait_for(lambda: browser.find_element(By.ID, "model").text == "tiny")
        browser.find_element(By.ID, "temperature").clear()
        browser.find_element(By.ID, "temperature").send_keys("0")
        browser.find_element(By.ID, "max_tokens").clear()
        browser.find_element(By.ID, "max_tokens").send_keys("40")
        for n, message in enumerate(["Hello there", "And again"], 1):
            browser.find_element(By.ID, "input").send_keys(message)
            browser.find_element(By.ID, "send").click()
            print(
                "MSGS",
                [
                    (e.get_attribute("class"), text(e)[:20])
                    for e in browser.find_elements(By.CSS_SELECTOR, ".msg")
                ],
            )
            partial = wait_for(
                lambda: [text(e) for e in browser.find_elements(By.CSS_SELECTOR, ".streaming") if text(e)]
            )
            wait_for(lambda n=n: len(browser.find_elements(By.CSS_SELECTOR, ".assistant.done")) == n)
            final = text(browser.find_elements(By.CSS_SELECTOR, ".assistant.done")[-1])
            assert final.startswith(partial[0]) and len(final) > len(partial[0])  # it grew while we watched
            wait_for(lambda: browser.find_element(By.ID, "send").is_enabled())
        users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.user")]
        assert users == ["Hello there", "And again"]  # the conversation is kept on the page
        assert "tokens/s" in browser.find_element(By.ID, "stats").text
    finally:
        live.close()
