"""The browser explorer: explorer.json against independent arithmetic, the server's page and
static files, and a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) moving a slider, drawing, and uploading a file that is not an image."""
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import sys

import numpy as np
import pytest

import kvae
from kvae.data import datasets as data
from kvae.export import explorer, bundle as export

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
import chromium_browser  # noqa: E402  (the browser helpers the docs' screenshot uses too)
from serving import serving  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def trained():
    """A VAE on the bundled digits (8x8, latent 3), trained briefly, and 120 validation digits."""
    x, _ = data.load("digits", "train").arrays()
    vx, vy = data.load("digits", "valid").head(120).arrays()
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(64,), seed=0)
    model.compile(optimizer="adam")
    model.fit(x, batch_size=64, epochs=3, verbose=0)
    return model, vx, vy


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    model, vx, vy = trained
    path = str(tmp_path_factory.mktemp("explorer") / "bundle")
    export.export(model, path, check=False, explorer=explorer.explorer_data(model, vx, vy))
    return path


@pytest.fixture(scope="module")
def server(bundle):
    with serving(bundle, max_samples=256) as port:
        yield f"http://127.0.0.1:{port}"


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def _post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_explorer_data_is_the_posterior_and_its_pca(trained):
    model, vx, vy = trained
    info = explorer.explorer_data(model, vx, vy)
    loc, scale = (np.asarray(t) for t in model.encode_params(vx))
    # codes: the Gaussian posterior's means; KL per dimension written out for N(mu, s^2) against N(0, 1)
    np.testing.assert_allclose(info["codes"], loc, atol=1e-4)
    kl = (0.5 * (loc ** 2 + scale ** 2 - 1.0) - np.log(scale)).mean(axis=0)
    np.testing.assert_allclose(info["kl_per_dim"], kl, atol=2e-4)
    # PCA map: the same plane as scikit-learn's PCA (columns equal up to sign)
    from sklearn.decomposition import PCA

    ref = PCA(n_components=2).fit(loc)
    points = np.asarray(info["pca"]["points"])
    ref_points = ref.transform(loc)
    for k in range(2):
        sign = np.sign(np.dot(points[:, k], ref_points[:, k]))
        np.testing.assert_allclose(points[:, k], sign * ref_points[:, k], atol=1e-3)
    comps = np.asarray(info["pca"]["components"])
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-3)
    assert info["labels"] == [int(v) for v in vy]
    assert info["prior"] == "standard_normal" and len(info["examples"]) == 8
    lo, hi = np.asarray(info["ranges"]).T
    assert np.all(lo <= -3) and np.all(hi >= 3) and np.all(lo <= loc.min(axis=0)) and np.all(hi >= loc.max(axis=0))
    # one group: every dimension on a slider, largest KL first
    assert info["groups"] == [{"name": "z", "offset": 0, "size": loc.shape[1]}]
    assert info["slider_dims"] == [int(d) for d in np.argsort(-kl, kind="stable")]


def test_a_hierarchy_puts_its_top_group_on_the_sliders():
    import kvae

    model = kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=0)
    x = (np.random.RandomState(0).uniform(size=(40, 8, 8, 1)) > 0.5).astype("float32")
    info = explorer.explorer_data(model, x)
    assert info["groups"] == [{"name": "z2", "offset": 0, "size": 8}, {"name": "z1", "offset": 8, "size": 32}]
    kl = np.asarray(info["kl_per_dim"])
    assert sorted(info["slider_dims"]) == list(range(8))  # the top group's dimensions only
    assert list(kl[info["slider_dims"]]) == sorted(kl[:8], reverse=True)
    assert np.asarray(info["codes"]).shape == (40, 40)


def test_a_long_code_caps_the_examples_and_the_sliders(monkeypatch):
    import kvae

    monkeypatch.setattr(explorer, "MAX_CODE_NUMBERS", 60 * 40)
    monkeypatch.setattr(explorer, "MAX_SLIDERS", 5)
    model = kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=0)
    x = (np.random.RandomState(0).uniform(size=(200, 8, 8, 1)) > 0.5).astype("float32")
    info = explorer.explorer_data(model, x)
    assert info["n"] == 60 and len(info["slider_dims"]) == 5


def test_pca_map_of_a_one_dimensional_code_has_a_zero_second_axis():
    mean, comps, points = explorer.pca_map(np.arange(6.0)[:, None])
    assert comps.shape == (2, 1) and comps[0, 0] == 1.0 and comps[1, 0] == 0.0
    np.testing.assert_allclose(points[:, 0], np.arange(6.0) - 2.5)


def test_bundle_verifies_explorer_json(bundle, tmp_path):
    from kvae_serve.bundle import Bundle, BundleError

    assert Bundle(bundle).explorer["format"] == "kvae-explorer/1"
    copy = str(tmp_path / "copy")
    shutil.copytree(bundle, copy)
    with open(os.path.join(copy, "explorer.json"), "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="sha256"):
        Bundle(copy)


def test_server_serves_the_page_its_assets_and_the_images_endpoint(server, trained):
    model = trained[0]
    status, ctype, body = _get(server + "/")
    assert status == 200 and ctype.startswith("text/html") and b'src="/static/explorer.js"' in body
    for name, kind in (("explorer.js", "text/javascript"), ("explorer.css", "text/css")):
        status, ctype, body = _get(f"{server}/static/{name}")
        assert status == 200 and ctype.startswith(kind) and len(body) > 100
    assert _get(server + "/static/../server.py")[0] == 404
    assert _get(server + "/static/nothing.js")[0] == 404
    status, _, body = _get(server + "/explorer.json")
    assert status == 200 and json.loads(body)["n"] == 120
    z = np.random.RandomState(0).normal(size=(5, 3))
    status, out = _post(server + "/images", {"z": z.tolist()})
    assert status == 200 and out["shape"] == [5, 8, 8, 1]
    np.testing.assert_allclose(out["images"], np.asarray(model.decode(z).mean()), atol=1e-5)
    status, out = _post(server + "/images", {"z": [[0.0, 1.0]]})
    assert status == 400 and "shape" in out["error"]


def test_a_bundle_without_explorer_data_answers_404(tmp_path):
    path = str(tmp_path / "plain")
    export.export(kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0), path, check=False)
    with serving(path) as port:
        url = f"http://127.0.0.1:{port}"
        status, _, body = _get(url + "/explorer.json")
        assert status == 404 and b"--explorer-examples" in body
        assert json.loads(_get(url + "/healthz")[2])["explorer"] is False


# ---------------------------------------------------------------- a real browser
def _browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("KVAE_REQUIRE_BROWSER"):
            pytest.fail("KVAE_REQUIRE_BROWSER is set but chromium/chromedriver are not installed "
                        "(apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return chromium_browser.chromium_driver(tmp_path / "profile")


_wait, _idle = chromium_browser.wait_for, chromium_browser.idle


def _pixels(driver, canvas_id):
    """sha256 and mean brightness of a canvas' pixels."""
    values = driver.execute_script(
        f"const c = document.getElementById('{canvas_id}');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);")
    arr = np.asarray(values, np.uint8)
    return hashlib.sha256(arr.tobytes()).hexdigest(), float(arr.reshape(-1, 4)[:, :3].mean())


def test_the_explorer_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = _browser(tmp_path)
    try:
        driver.get(server + "/")
        _wait(driver, "document.body.dataset.ready === '1'")
        _idle(driver)
        _wait(driver, "document.getElementById('decoded').dataset.version")
        assert driver.find_element(By.ID, "error").get_attribute("hidden") is not None
        # one slider per latent dimension, ordered by KL (largest first)
        sliders = driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")
        assert len(sliders) == 3
        kl = driver.execute_script("return window.kvaeExplorer.explorer.kl_per_dim")
        assert [s.get_attribute("id") for s in sliders] == [f"z{d}" for d in np.argsort(kl)[::-1]]
        # moving the first slider changes the decoded image
        before, _ = _pixels(driver, "decoded")
        version = int(_wait(driver, "document.getElementById('decoded').dataset.version"))
        ActionChains(driver).click_and_hold(sliders[0]).move_by_offset(-sliders[0].size["width"] // 2 + 2, 0) \
            .release().perform()
        _wait(driver, f"+document.getElementById('decoded').dataset.version > {version}")
        _idle(driver)
        after, _ = _pixels(driver, "decoded")
        assert after != before
        # a slider dragged quickly: at most one /images request in flight, fewer requests than moves,
        # and the last request decodes the final code
        driver.execute_script("""
            const R = window.__requests = {active: 0, max: 0, bodies: []};
            const original = window.fetch;
            window.fetch = async (path, init) => {
              const counted = path === '/images';
              if (counted) { R.active++; R.max = Math.max(R.max, R.active); R.bodies.push(JSON.parse(init.body)); }
              try { return await original(path, init); } finally { if (counted) R.active--; }
            };""")
        driver.execute_async_script("""
            const done = arguments[arguments.length - 1], input = document.querySelectorAll('#sliders input')[1];
            (async () => {
              for (let k = 0; k < 40; k++) {
                input.value = String(-2 + k * 0.1);
                input.dispatchEvent(new Event('input'));
                await new Promise((r) => setTimeout(r, k % 5 === 0 ? 40 : 5));
              }
              done();
            })();""")
        time.sleep(0.2)
        _idle(driver)
        requests = driver.execute_script("return window.__requests")
        assert requests["max"] == 1 and 1 <= len(requests["bodies"]) < 40, (requests["max"], len(requests["bodies"]))
        final = driver.execute_script("return window.kvaeExplorer.z")
        np.testing.assert_allclose(requests["bodies"][-1]["z"][0], final)
        assert final[int(sliders[1].get_attribute("id")[1:])] == pytest.approx(-2 + 39 * 0.1)
        # drawing a stroke on the canvas shows a reconstruction and puts its code on the sliders
        canvas = driver.find_element(By.ID, "draw")
        assert driver.execute_script("return document.getElementById('recon').dataset.version") is None
        ActionChains(driver).move_to_element_with_offset(canvas, -40, -60).click_and_hold() \
            .move_by_offset(30, 40).move_by_offset(20, 60).move_by_offset(-10, 20).release().perform()
        _wait(driver, "document.getElementById('recon').dataset.version")
        _idle(driver)
        _, brightness = _pixels(driver, "recon")
        assert brightness > 1.0  # an image, not the empty black canvas
        code = driver.execute_script("return window.kvaeExplorer.z")
        encoded = driver.execute_script("return window.kvaeExplorer.lastEncoded")
        np.testing.assert_allclose(code, encoded)
        # interpolation strip between two encoded images
        driver.find_element(By.ID, "set-a").click()
        driver.find_element(By.ID, "clear").click()
        ActionChains(driver).move_to_element_with_offset(canvas, 0, -70).click_and_hold() \
            .move_by_offset(0, 140).release().perform()
        _idle(driver)
        driver.find_element(By.ID, "set-b").click()
        _idle(driver)
        _wait(driver, "window.kvaeExplorer.codeA && window.kvaeExplorer.codeB")
        _idle(driver)
        _, strip = _pixels(driver, "strip")
        assert strip > 1.0
        # a file that is not an image: a message on the page, and the server still answers
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        driver.find_element(By.ID, "upload").send_keys(str(bad))
        _wait(driver, "!document.getElementById('error').hidden")
        assert "not an image" in driver.find_element(By.ID, "error").text
        assert _get(server + "/healthz")[0] == 200
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
        if os.environ.get("KVAE_EXPLORER_SCREENSHOT"):
            driver.save_screenshot(os.environ["KVAE_EXPLORER_SCREENSHOT"])
    finally:
        driver.quit()
