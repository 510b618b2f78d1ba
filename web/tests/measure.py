"""Screenshots and speed figures of the playground in headless Chromium (not a test).

    python3 web/tests/measure.py URL OUTDIR [--speed]

URL is where `chainrule playground` serves web/dist. Writes OUTDIR/*.png (one per
mode of the page) and, with --speed, prints:
- the spiral default's epochs per second while the page runs (training and drawing,
  as a user sees it), over 10 s of the page's own clock;
- the time of one step of notebook 000's 2-2-1 network in WebAssembly (mean over
  20,000 calls of `Playground.train(1)`, timed with performance.now()).
"""

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def main():
    url, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1480,1000", "--hide-scrollbars"):
        options.add_argument(flag)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    d.set_script_timeout(300)

    def ready():
        WebDriverWait(d, 60, 0.05).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")

    def preset(value):
        Select(d.find_element(By.ID, "preset")).select_by_value(value)
        ready()

    def shot(name, element_id):
        """A screenshot with the element scrolled into view (below the fold)."""
        d.execute_script("document.getElementById(arguments[0]).scrollIntoView()", element_id)
        d.save_screenshot(str(out / name))
        d.execute_script("window.scrollTo(0, 0)")

    def click(element):
        e = d.find_element(By.CSS_SELECTOR, f'#drawing [data-element="{element}"]:not(text)')
        d.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", e)

    d.get(url)
    ready()
    d.save_screenshot(str(out / "spiral-start.png"))
    status = d.find_element(By.ID, "status")
    if "--speed" in sys.argv:
        d.find_element(By.ID, "run").click()
        WebDriverWait(d, 60, 0.05).until(lambda d: int(status.get_attribute("data-steps")) > 0)
        result = d.execute_async_script("""
            const done = arguments[0];
            const pg = window.chainrule.playground;
            const s0 = pg.steps(), t0 = performance.now();
            setTimeout(() => done([pg.steps() - s0, performance.now() - t0, pg.samples()]), 10000);
        """)
        steps, ms, samples = result
        per_epoch = -(-samples // 32)
        print(f"spiral default: {steps} steps in {ms / 1000:.2f} s = {steps / per_epoch / (ms / 1000):.1f} epochs/s "
              f"({samples} training points, batch 32, {per_epoch} steps an epoch)")
        d.find_element(By.ID, "run").click()
    else:
        d.find_element(By.ID, "run").click()
        WebDriverWait(d, 300, 0.05).until(
            lambda d: float(status.get_attribute("data-validation-accuracy") or 0) >= 0.95)
        d.find_element(By.ID, "run").click()
    WebDriverWait(d, 10, 0.05).until(lambda d: d.find_element(By.ID, "run").text == "Run")
    click("2.weight[1,3]")
    d.save_screenshot(str(out / "spiral-trained.png"))
    click("0.weight[5,1]")   # a first-layer weight: the longest chain and sum
    d.save_screenshot(str(out / "spiral-hidden-weight.png"))
    click("2.weight[1,3]")
    d.find_element(By.ID, "graph").click()
    shot("spiral-graph.png", "graph-view")
    d.find_element(By.ID, "gradcheck").click()
    shot("spiral-gradcheck.png", "explain-text")
    d.execute_script("window.scrollTo(0, 0)")
    d.find_element(By.ID, "phase-backward").click()
    d.save_screenshot(str(out / "spiral-backward.png"))
    d.find_element(By.ID, "phase-off").click()

    preset("nb:000")
    click("2.weight[0,0]")
    d.save_screenshot(str(out / "nb000-w5.png"))
    for phase in ("forward", "backward", "update"):
        d.find_element(By.ID, f"phase-{phase}").click()
        d.save_screenshot(str(out / f"nb000-{phase}.png"))
    d.find_element(By.ID, "step").click()
    d.save_screenshot(str(out / "nb000-stepped.png"))
    if "--speed" in sys.argv:
        per_step = d.execute_script("""
            const pg = window.chainrule.playground;
            pg.train(1000);
            const t0 = performance.now();
            pg.train(20000);
            return (performance.now() - t0) / 20000;
        """)
        print(f"notebook 000 (2-2-1) step in wasm: {per_step * 1000:.2f} µs")
    for name, element in (("001_single_weight", "0.weight[0,0]"), ("001_two_weights", "0.weight[0,0]"),
                          ("001_sigmoid_biases", "0.bias[0]"), ("004", "0.weight[1,0]")):
        preset(f"nb:{name}")
        click(element)
        d.save_screenshot(str(out / f"nb{name}.png"))
    preset("nb:003")
    d.find_element(By.CSS_SELECTOR, '#params-table td[data-element="w0"]').click()
    d.save_screenshot(str(out / "nb003-w0.png"))
    preset("blobs")
    d.save_screenshot(str(out / "blobs.png"))
    d.quit()


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s", file=sys.stderr)
