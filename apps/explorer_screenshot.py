"""Screenshot of the browser explorer on a pretrained model, taken by headless Chromium (Debian's
chromium + chromium-driver, driven by Selenium): the picture in docs/explorer.md.

    python apps/explorer_screenshot.py [--pretrained vae-binarized-mnist] [--out docs/images/explorer.png]

Exports the model with explorer data from its validation images (``$KVAE_DATA_DIR``), serves it
with kvae-serve on a free port, loads two example digits into the interpolation ends, moves the
first slider, and saves the page.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "helpers"))
from chromium_browser import chromium_driver, idle, wait_for  # noqa: E402  (shared with the browser test)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", default="vae-binarized-mnist")
    p.add_argument("--out", default=os.path.join("docs", "images", "explorer.png"))
    args = p.parse_args()

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from kvae.export import explorer, bundle as export
    from kvae.pretrained import store as pretrained
    from kvae.training import runs
    from kvae_serve.server import make_server

    tmp = tempfile.mkdtemp()
    try:
        pretrained.fetch(args.pretrained, os.path.join(tmp, "run"))
        model, config = runs.load_run(os.path.join(tmp, "run"))
        found = explorer.run_examples(config)
        if found is None:
            raise SystemExit("the model's validation images were not found: set KVAE_DATA_DIR")
        export.export(model, os.path.join(tmp, "bundle"), check=False, explorer=explorer.explorer_data(model, *found))
        srv = make_server(os.path.join(tmp, "bundle"), port=0)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        driver = chromium_driver(os.path.join(tmp, "profile"))
        try:
            driver.get(f"http://127.0.0.1:{srv.server_address[1]}/")
            wait_for(driver, "document.body.dataset.ready === '1'")
            idle(driver)
            for index, button in (("1", "set-a"), ("4", "set-b")):
                Select(driver.find_element(By.ID, "example")).select_by_value(index)
                wait_for(driver, "window.kvaeExplorer.lastEncoded")
                idle(driver)
                driver.find_element(By.ID, button).click()
                idle(driver)
            first = driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")[0]
            ActionChains(driver).click_and_hold(first).move_by_offset(first.size["width"] // 4, 0).release().perform()
            time.sleep(0.2)
            idle(driver)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the whole page in one picture
                "width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
            driver.save_screenshot(args.out)
            print(f"wrote {args.out}")
        finally:
            driver.quit()
            srv.shutdown()
            srv.server_close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
