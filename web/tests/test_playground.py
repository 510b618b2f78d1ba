"""End-to-end tests of the playground in headless Chromium (issue 16, item 4).

They drive the built page (web/dist, from web/build.sh) served by `chainrule
playground`, through WebDriver: Debian's chromium and chromium-driver packages and
the selenium package from PyPI. Every wait is for a state of the page (an attribute,
a text, a file), never a fixed sleep. The numbers the page shows are compared with
numbers computed elsewhere: the notebooks' own (examples/notebooks, as the Rust tests
in crates/chainrule-explain/tests/notebooks.rs assert them) and the native
`chainrule` binary's.

Environment: CHAINRULE (the binary; default target/debug/chainrule), CHROMIUM and
CHROMEDRIVER (default /usr/bin/chromium and /usr/bin/chromedriver), PLAYGROUND_URL
(an already running server of web/dist, instead of starting `chainrule playground`).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"
CHAINRULE = Path(os.environ.get("CHAINRULE", ROOT / "target" / "debug" / "chainrule"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def site():
    """`chainrule playground` on a free port; its first line names the address
    (or the server at PLAYGROUND_URL, when that is set)."""
    if os.environ.get("PLAYGROUND_URL"):
        yield os.environ["PLAYGROUND_URL"]
        return
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} is not built: run web/build.sh first")
    server = subprocess.Popen(
        [str(CHAINRULE), "playground", "--dir", str(DIST), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    if " at " not in line:
        server.kill()
        pytest.fail(f"chainrule playground did not start: {line}{server.stderr.read()}")
    url = line.split(" at ")[1].split()[0]
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def downloads(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1500,1100"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(120)
    yield driver
    logs = []
    try:
        logs = driver.get_log("browser")
    except Exception:  # not every driver keeps the console
        pass
    driver.quit()
    severe = [entry for entry in logs if entry.get("level") == "SEVERE"]
    assert not severe, f"errors in the page's console: {severe}"


def wait(driver, condition, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message)


def ready(driver):
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
         in ("ready", "error"))
    error = driver.find_element(By.ID, "error").text
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", error
    assert error == "", error


def open_page(driver, url):
    driver.get(url)
    ready(driver)


def choose_preset(driver, value):
    Select(driver.find_element(By.ID, "preset")).select_by_value(value)
    ready(driver)


def steps(driver):
    return int(driver.find_element(By.ID, "status").get_attribute("data-steps"))


def step(driver):
    before = steps(driver)
    driver.find_element(By.ID, "step").click()
    wait(driver, lambda d: steps(d) == before + 1)


def shown_value(driver, element):
    cell = driver.find_element(By.CSS_SELECTOR, f'#params-table td[data-element="{element}"]')
    return float(cell.text)


def click_element(driver, element, real=False):
    """Clicks a weight's line (or a unit's circle) in the drawing: with the mouse at
    its centre when `real`, else by a click event on it (in a dense drawing another
    line may cross a line's centre)."""
    target = driver.find_element(By.CSS_SELECTOR, f'#drawing [data-element="{element}"]:not(text)')
    if real:
        webdriver.ActionChains(driver).move_to_element(target).click().perform()
    else:
        driver.execute_script(
            "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", target)
    wait(driver, lambda d: d.find_element(By.ID, "explain-title").text == f"∂C/∂{element}")


def page_parameters(driver):
    return json.loads(driver.execute_script("return window.chainrule.playground.parameters()"))


def derivation(output):
    """`chainrule explain --format json`'s derivation (it prints a list of them)."""
    parsed = json.loads(output)
    return parsed[0] if isinstance(parsed, list) else parsed


def chainrule(*args):
    done = subprocess.run([str(CHAINRULE), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_notebook_000_preset_steps_to_the_notebooks_new_weights(browser, site):
    open_page(browser, site)
    choose_preset(browser, "nb:000")
    step(browser)
    # Notebook 000 after one step of gradient descent (η = 0.01, loss SSE):
    # w1 → 0.99, w2 → 0.49, w5 → 0.985, w6 → 0.995.
    for element, want in [("0.weight[0,0]", 0.99), ("0.weight[1,0]", 0.49),
                          ("2.weight[0,0]", 0.985), ("2.weight[0,1]", 0.995)]:
        assert shown_value(browser, element) == pytest.approx(want, abs=1e-12), element


def test_clicking_w5_shows_the_notebooks_factors_and_the_native_derivation(browser, site):
    open_page(browser, site)
    choose_preset(browser, "nb:000")
    click_element(browser, "2.weight[0,0]", real=True)
    chips = browser.find_elements(By.CSS_SELECTOR, "#factors .factor-row:first-child .factor .value")
    # ∂C/∂w5 = a⁽¹⁾₁ · relu′(z⁽²⁾₁) · 2(a⁽²⁾₁ − y) = 1.5 · 1 · 1 (the notebook's).
    assert [float(c.text) for c in chips] == [1.5, 1.0, 1.0]
    update = browser.find_element(By.CSS_SELECTOR, "#factors .update")
    assert float(update.get_attribute("data-new")) == pytest.approx(0.985, abs=1e-12)
    # The typeset derivation went through KaTeX.
    assert browser.find_elements(By.CSS_SELECTOR, "#explain-math .katex")
    # The native binary's derivation of the same weight, factor for factor.
    native = derivation(chainrule("explain", ROOT / "examples/notebooks/000",
                                  "--param", "2.weight[0,0]", "--format", "json"))
    shown = [float(c.get_attribute("data-value")) for c in
             browser.find_elements(By.CSS_SELECTOR, "#factors .factor-row:first-child .factor")]
    assert shown == [f["value"] for f in native["samples"][0]["factors"]]


def test_the_spiral_trains_to_95_percent_validation_accuracy(browser, site):
    open_page(browser, site)
    status = browser.find_element(By.ID, "status")
    first_loss = browser.execute_script("return window.chainrule.playground.loss()")
    browser.find_element(By.ID, "run").click()
    wait(browser, lambda d: float(status.get_attribute("data-validation-accuracy") or 0) >= 0.95,
         timeout=300, message=f"validation accuracy stayed below 95%: {status.text}")
    browser.find_element(By.ID, "run").click()
    wait(browser, lambda d: d.find_element(By.ID, "run").text == "Run")
    assert browser.execute_script("return window.chainrule.playground.loss()") < first_loss / 4


def test_a_shared_url_restores_the_network_its_training_and_the_chosen_weight(browser, site):
    open_page(browser, site)
    choose_preset(browser, "moons")
    hidden = browser.find_element(By.ID, "hidden")
    hidden.clear()
    hidden.send_keys("5 relu, 3\n")
    browser.execute_script("document.getElementById('hidden').dispatchEvent(new Event('change'))")
    ready(browser)
    for _ in range(7):
        step(browser)
    click_element(browser, "2.weight[1,4]")
    url = browser.current_url
    want = page_parameters(browser)
    derivation = browser.find_element(By.ID, "factors").text
    assert "steps=7" in url
    browser.get("about:blank")
    open_page(browser, url)
    assert steps(browser) == 7
    assert browser.find_element(By.ID, "hidden").get_attribute("value") == "5 relu, 3"
    assert page_parameters(browser) == want
    assert browser.find_element(By.ID, "explain-title").text == "∂C/∂2.weight[1,4]"
    assert browser.find_element(By.ID, "factors").text == derivation


def wait_for_file(driver, path):
    wait(driver, lambda d: path.is_file() and path.stat().st_size > 0, timeout=30,
         message=f"{path.name} was not downloaded")


def test_downloaded_files_load_in_chainrule_and_back_in_the_page(browser, site, downloads, tmp_path):
    open_page(browser, site)
    choose_preset(browser, "circles")
    for _ in range(5):
        step(browser)
    browser.find_element(By.ID, "download-model").click()
    browser.find_element(By.ID, "download-params").click()
    model, params = downloads / "model.json", downloads / "params.safetensors"
    wait_for_file(browser, model)
    wait_for_file(browser, params)
    want = page_parameters(browser)
    count = sum(len(t["values"]) for t in want.values())
    summary = chainrule("summary", model)
    assert f"total parameters: {count}" in summary, summary
    # The native binary explains the downloaded network on sample 3 as the page does.
    points = browser.execute_script("return Array.from(window.chainrule.playground.points())")
    labels = browser.execute_script("return Array.from(window.chainrule.playground.labels())")
    np.save(tmp_path / "x.npy", np.array(points[6:8], dtype=np.float64).reshape(1, 2))
    np.save(tmp_path / "y.npy", np.array(labels[3:4], dtype=np.int64))
    native = derivation(chainrule("explain", "--model", model, "--params", params,
                                  "--x", tmp_path / "x.npy", "--y", tmp_path / "y.npy",
                                  "--loss", "cross_entropy", "--param", "0.weight[1,0]",
                                  "--format", "json"))
    page = json.loads(browser.execute_script(
        "return window.chainrule.playground.explain('0.weight[1,0]', 3, 'json')"))
    assert native["autodiff"] == pytest.approx(page["autodiff"], rel=1e-12, abs=1e-15)
    # Loading the files back into a fresh network restores the parameters exactly.
    browser.find_element(By.ID, "reset").click()
    ready(browser)
    assert page_parameters(browser) != want
    browser.find_element(By.ID, "upload").send_keys(f"{model}\n{params}")
    wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-uploaded") == "yes")
    assert page_parameters(browser) == want


def test_graph_and_gradient_check_show_in_the_page(browser, site):
    open_page(browser, site)
    choose_preset(browser, "xor")
    browser.find_element(By.ID, "graph").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#graph-view svg"))
    browser.find_element(By.ID, "gradcheck").click()
    wait(browser, lambda d: "every tensor" in d.find_element(By.ID, "explain-text").text)
    assert "✓" in browser.find_element(By.ID, "explain-text").text


def test_step_through_writes_the_traced_numbers_on_the_drawing(browser, site):
    open_page(browser, site)
    choose_preset(browser, "nb:000")
    browser.find_element(By.ID, "phase-forward").click()
    wait(browser, lambda d: "Forward" in d.find_element(By.ID, "phase-note").text)
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#drawing text.trace")]
    # Notebook 000's forward pass: the output unit's z = a = 2.5 (y = 2, C = 0.25).
    assert "z=2.5" in labels and "a=2.5" in labels, labels
    browser.find_element(By.ID, "phase-update").click()
    wait(browser, lambda d: "Update" in d.find_element(By.ID, "phase-note").text)
    edges = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#drawing text.edge-label")]
    assert "→ 0.985" in edges and "→ 0.995" in edges, edges


def test_the_playground_command_refuses_paths_outside_its_folder(site):
    import urllib.error
    import urllib.request
    with urllib.request.urlopen(site + "pkg/chainrule_web_bg.wasm") as r:
        assert r.headers["Content-Type"] == "application/wasm"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(site + "%2e%2e/index.html")
    assert refused.value.code == 403
    assert shutil.which(str(CHAINRULE)) or CHAINRULE.is_file()


# Every element of a panel whose box ends right of the panel's right edge, unless an
# element between it and the panel clips or scrolls it (then that element is what shows,
# and it is checked instead). KaTeX's MathML copy is such a clipped element.
OVERFLOWING = """
const panel = arguments[0];
const right = panel.getBoundingClientRect().right;
const clips = (e) => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(e).overflowX);
const out = [];
for (const e of panel.querySelectorAll("*")) {
  let shown = e;
  for (let a = e.parentElement; a && a !== panel; a = a.parentElement) if (clips(a)) shown = a;
  const r = shown.getBoundingClientRect();
  if (r.width > 0 && r.right > right + 0.5) {
    out.push(`${shown.tagName.toLowerCase()}.${shown.className.baseVal ?? shown.className}`
             + ` ends at ${r.right.toFixed(1)} > ${right.toFixed(1)}`);
  }
}
return [...new Set(out)];
"""


def test_the_widest_derivation_stays_inside_its_panel(browser, site):
    open_page(browser, site)   # the spiral: 2 → 16 → 16 → 3
    for _ in range(3):
        step(browser)
    # A first-layer weight: its unit feeds 16 units, the longest chain and sum.
    click_element(browser, "0.weight[5,1]")
    panel = browser.find_element(By.ID, "explain")
    assert browser.find_elements(By.CSS_SELECTOR, "#explain-math .display .katex")
    assert browser.execute_script(OVERFLOWING, panel) == []
    page_width = browser.execute_script("return document.documentElement.clientWidth")
    assert panel.rect["x"] + panel.rect["width"] <= page_width + 0.5
    # The chain wrapped at its operators rather than scrolling: its block shows all of it.
    display = browser.find_element(By.CSS_SELECTOR, "#explain-math .display")
    assert browser.execute_script(
        "return arguments[0].scrollWidth <= arguments[0].clientWidth + 1", display)
    # The gradient check's table shows in the same panel.
    browser.find_element(By.ID, "gradcheck").click()
    wait(browser, lambda d: "every tensor" in d.find_element(By.ID, "explain-text").text)
    assert browser.execute_script(OVERFLOWING, panel) == []
    # The graph (2,000 px wide) gets a row of its own and scrolls inside it.
    browser.find_element(By.ID, "graph").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#graph-view svg"))
    graph = browser.find_element(By.ID, "graph-section")
    assert browser.execute_script(OVERFLOWING, graph) == []
    assert graph.rect["x"] + graph.rect["width"] <= page_width + 0.5


def usable(driver, element_id):
    element = driver.find_element(By.ID, element_id)
    return element.is_displayed() and element.is_enabled()


# Controls that act on a Playground (training, the sample, its views and files).
TRAINING_CONTROLS = ["run", "step", "sample", "phase-forward", "phase-update", "graph",
                     "gradcheck", "download-model", "download-params"]


def curve_is_blank(driver):
    return driver.execute_script("""
        const c = document.getElementById('curve');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every((v) => v === 0);
    """)


def test_switching_presets_resets_the_curve_and_the_controls_that_apply(browser, site):
    open_page(browser, site)
    curve = browser.find_element(By.ID, "curve")
    for _ in range(3):
        step(browser)
    assert int(curve.get_attribute("data-points")) == 4 and not curve_is_blank(browser)
    # Notebook 003 is a formula network: derivations only. The previous curve is gone
    # and nothing that trains, samples or downloads can be used.
    choose_preset(browser, "nb:003")
    assert curve.get_attribute("data-points") == "0" and curve_is_blank(browser)
    assert not curve.is_displayed()
    for control in TRAINING_CONTROLS + ["hidden", "lr", "loss", "samples"]:
        assert not usable(browser, control), control
    # Its parameters are clicked in the table; the formula names its loss L.
    browser.find_element(By.CSS_SELECTOR, '#params-table td[data-element="w0"]').click()
    wait(browser, lambda d: d.find_element(By.ID, "explain-title").text == "∂L/∂w0")
    assert browser.find_elements(By.CSS_SELECTOR, "#explain-math .katex")
    # Its link restores the chosen parameter.
    url = browser.current_url
    assert "el=w0" in url
    browser.get("about:blank")
    open_page(browser, url)
    assert browser.find_element(By.ID, "explain-title").text == "∂L/∂w0"
    curve = browser.find_element(By.ID, "curve")
    # A notebook with a network trains again, with its own loss and learning rate
    # shown but fixed, and a curve that starts at its own first loss.
    choose_preset(browser, "nb:000")
    assert curve.get_attribute("data-points") == "1"
    for control in TRAINING_CONTROLS:
        assert usable(browser, control), control
    assert browser.find_element(By.ID, "loss").get_attribute("value") == "sse"
    for control in ["loss", "optimizer", "lr", "hidden", "samples"]:
        assert not usable(browser, control), control
    step(browser)
    assert curve.get_attribute("data-points") == "2"
    # Back to a data set: every control applies again, and the curve starts over.
    choose_preset(browser, "moons")
    assert curve.get_attribute("data-points") == "1"
    for control in TRAINING_CONTROLS + ["hidden", "activation", "loss", "optimizer", "lr",
                                        "momentum", "batch", "seed", "samples", "noise",
                                        "validation"]:
        assert usable(browser, control), control
    assert browser.find_element(By.ID, "loss").get_attribute("value") == "cross_entropy"
