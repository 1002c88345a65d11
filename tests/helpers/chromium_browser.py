"""Headless Chromium through Selenium (the system's chromium + chromium-driver, no browser download): the
driver and the waits the explorer's browser test and apps/explorer_screenshot.py share."""
import shutil
import time

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def chromium_driver(profile_dir, width=1400, height=1100):
    """A Selenium driver for the system's headless Chromium (no browser download), browser console
    logs kept; flags that keep it off the network (this machine has none)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait_for(driver, script, timeout=60):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {script}")


def idle(driver):
    """Wait until the page has no request in flight."""
    wait_for(driver, "document.body.dataset.busy === '0' || document.body.dataset.busy === undefined")
