"""The router's chat page in a real headless Chromium: key once, pick a model, streamed answer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet
from nerschat.testing.router import running_router

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:  # scripts/test.sh installs both
        pytest.fail("chromium and chromedriver are needed (apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.mark.slow
def test_type_a_question_and_see_the_streamed_answer(
        fleet: StubFleet, registry: Registry, browser: webdriver.Chrome) -> None:
    fleet.start_ready(1, "m1", chunk_delay=0.05)
    fleet.start_ready(1, "e1", kind="embedding")
    with running_router(registry) as router:
        browser.get(router.root + "/")
        wait = WebDriverWait(browser, 20)
        key_box = wait.until(expected_conditions.visibility_of_element_located((By.ID, "key")))
        key_box.send_keys(router.key + "\n")
        # The picker offers the LLM only, not the embedding model.
        wait.until(lambda b: [o.text for o in b.find_elements(By.CSS_SELECTOR, "#model option")]
                   == ["m1"])
        assert browser.execute_script("return sessionStorage.getItem('nerschat-router-key')") \
            == router.key
        question = browser.find_element(By.ID, "question")
        question.send_keys("what is a gas giant\n")
        answer = "stub-m1 answer 0: what is a gas giant"
        seen: list[str] = []

        def answered(b: webdriver.Chrome) -> bool:
            text = b.find_element(By.CSS_SELECTOR, "#log .assistant").text
            if not seen or seen[-1] != text:
                seen.append(text)
            return text == answer

        WebDriverWait(browser, 20, poll_frequency=0.02).until(answered)
        assert any(0 < len(s) < len(answer) for s in seen), f"no partial answer seen: {seen}"
        assert browser.find_element(By.CSS_SELECTOR, "#log .user").text == "what is a gas giant"
        # The key stays for the session: a reload asks no key and keeps working.
        browser.refresh()
        wait.until(lambda b: [o.text for o in b.find_elements(By.CSS_SELECTOR, "#model option")]
                   == ["m1"])
        assert not browser.find_element(By.ID, "key").is_displayed()
