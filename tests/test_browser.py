"""The course in a real browser: headless Chromium, driven by Selenium through chromedriver.

- JupyterLab, started here on 127.0.0.1 (a free port, a token, smoke mode), runs notebook 02: every widget
  renders, the audio players play, moving a slider of the augmentation panel changes its readout and the
  views drawn, and no cell fails.
- The built website (``UCLSER_SITE_DIR``; `make test` builds ``build/site-smoke/html`` from smoke-mode runs),
  served over HTTP on 127.0.0.1 and opened page by page: no console error, every image and sound loads,
  every resource comes from the site itself (no CDN), the saved widgets render, every internal link and
  anchor resolves, and the search finds pages.

Skipped where Chromium and chromedriver are not installed; `.ci/run` installs them, so CI runs them.
`make screenshots` saves the screenshots into figures/ (``UCLSER_SCREENSHOTS``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from uclser_lib.widgets import CONTROLS

from browser import CHECK_MEDIA_JS, chromium, console_errors, free_port, require_browser, screenshot, serve, wait_for

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_augmentations.ipynb"
N_SLIDERS = sum(c.kind in ("float", "int", "range") for c in CONTROLS.values())
N_CHECKBOXES = sum(c.kind == "toggle" for c in CONTROLS.values())
WIDGET_ERROR = "Error displaying widget"

pytestmark = pytest.mark.slow  # a browser, JupyterLab, the website, the notebooks' smoke runs

# JupyterLab's settings for the test: every cell kept in the page (no windowing), no news or update checks
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


# ----------------------------------------------------------------------------------------------------------------------
# The notebooks' smoke-mode runs that the website is built from (`make test` where Chromium is installed: they
# replace nbval's runs of the same notebooks, so that each notebook runs once)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_smoke_run_of_each_notebook(notebook):
    """Its run in ``UCLSER_SMOKE_RUNS`` (build/smoke) is up to date, ran every code cell, and holds no error."""
    folder = os.environ.get("UCLSER_SMOKE_RUNS")
    if not folder:
        pytest.skip("UCLSER_SMOKE_RUNS is not set: nbval runs the notebooks")
    run = ROOT / folder / notebook.name
    assert run.is_file(), f"no smoke-mode run {run} (make site-smoke)"
    assert run.stat().st_mtime >= notebook.stat().st_mtime, f"{run} is older than {notebook} (make site-smoke)"
    cells = [c for c in json.loads(run.read_text())["cells"] if c["cell_type"] == "code"]
    n_source = sum(c["cell_type"] == "code" for c in json.loads(notebook.read_text())["cells"])
    assert len(cells) == n_source, f"{run} has {len(cells)} code cells, {notebook} {n_source}"
    not_run = [i for i, c in enumerate(cells) if c.get("execution_count") is None and "".join(c["source"]).strip()]
    assert not not_run, f"code cells {not_run} of {run} did not run"
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{run}: {errors[0]['ename']}: {errors[0]['evalue']}" if errors else ""


# ----------------------------------------------------------------------------------------------------------------------
# JupyterLab


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 (free port, token) serving a copy of notebook 02; smoke mode for its kernels."""
    require_browser()
    root = tmp_path / "course"  # the repository's layout: the notebook's ../figures/badges/ images resolve
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / "notebooks")  # a copy: the lab's autosave never touches notebooks/
    shutil.copytree(NOTEBOOK.parents[1] / "figures" / "badges", root / "figures" / "badges")
    settings = tmp_path / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "UCLSER_SMOKE": "1",
        "OMP_NUM_THREADS": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    env.pop("MPLBACKEND", None)  # the kernel's own default: inline figures
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, env=env, cwd=root / "notebooks", stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_for(up, 90, "JupyterLab to answer")
        yield {"url": url, "token": token, "log": log_path}
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _prompts(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
        ".map((p) => p.textContent.trim())"
    )


def _error_outputs(driver) -> list[str]:
    """Text of the error outputs (tracebacks) and of stderr streams that name an error."""
    selector = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    texts = driver.execute_script(f"return [...document.querySelectorAll('{selector}')].map((e) => e.textContent)")
    return [t[:2000] for t in texts if any(w in t for w in ("Error", "Traceback", "Exception"))]


def _run_all_cells(driver):
    """Run > Run All Cells, from the menu bar, as a person would."""
    from selenium.webdriver.common.by import By

    menu = wait_for(
        lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Run"],
        30,
        "the Run menu",
    )
    menu[0].click()
    item = wait_for(
        lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel") if e.text == "Run All Cells"],
        10,
        "the Run All Cells menu item",
    )
    item[0].click()


# the panel: the outermost VBox around a slider; its images (the figure of the views) and its audio players
PANEL_JS = """
let root = arguments[0], up;
while ((up = root.parentElement && root.parentElement.closest('.widget-vbox'))) root = up;
return root;
"""


def test_lab_runs_notebook_02_and_its_panel_responds(lab, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    with chromium(tmp_path / "chromium-profile") as driver:
        driver.get(f"{lab['url']}/lab/tree/notebooks/{NOTEBOOK.name}?token={lab['token']}")
        n_code = sum(c["cell_type"] == "code" for c in json.loads(NOTEBOOK.read_text())["cells"])
        wait_for(
            lambda: (
                len(_prompts(driver)) == n_code
                and driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
            ),
            90,
            f"notebook 02 to open with its {n_code} code cells and an idle kernel",
        )
        _run_all_cells(driver)

        pending = []

        def finished():
            errors = _error_outputs(driver)
            if errors:
                pytest.fail("a cell of notebook 02 failed in JupyterLab:\n" + "\n---\n".join(errors))
            # a collapsed solution cell (source_hidden) shows no prompt: its errors still show in its outputs
            pending[:] = [f"cell {i + 1}: {p}" for i, p in enumerate(_prompts(driver)) if p and not p[1:-2].isdigit()]
            idle = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
            return idle and not pending

        try:
            wait_for(finished, 300, "every cell of notebook 02 to run (smoke mode)", every=1)
        except pytest.fail.Exception as e:
            screenshot(driver, "browser-lab-02-timeout", tmp_path, public=False)
            raise AssertionError(f"{e}; code cells not run: {pending}") from None
        screenshot(driver, "browser-lab-02-run", tmp_path, public=False)

        # every widget rendered: no error in their place, the panel's sliders and checkboxes all there
        console = console_errors(driver)
        said = "; the browser's console says:\n" + "\n".join(m.splitlines()[0][:300] for m in console[:10])
        said = said if console else ""
        body = driver.find_element(By.TAG_NAME, "body").text
        assert WIDGET_ERROR not in body, f"JupyterLab shows {WIDGET_ERROR!r}{said}"
        sliders = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-slider")
        checkboxes = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-checkbox")
        assert len(sliders) == N_SLIDERS, f"{len(sliders)} sliders rendered, the panel has {N_SLIDERS}{said}"
        assert len(checkboxes) == N_CHECKBOXES, f"{len(checkboxes)} checkboxes rendered, not {N_CHECKBOXES}{said}"
        widget_errors = [m for m in console if "widget" in m.lower()]
        assert not widget_errors, "the browser's console reports widget errors:\n" + "\n".join(widget_errors)

        # the audio players exist and every sound (and picture) decodes
        n_audio = driver.execute_script("return document.querySelectorAll('.jp-OutputArea-output audio').length")
        assert n_audio >= 10, f"only {n_audio} audio players in notebook 02's outputs"
        media = driver.execute_async_script(CHECK_MEDIA_JS)
        bad = [m for m in media if m[2]]
        assert not bad, f"media that do not load in JupyterLab: {bad}"

        # move the mix-back alpha slider: its readout and the panel's views change (the kernel redrew them)
        alpha = next(s for s in sliders if s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == "alpha")
        panel = driver.execute_script(PANEL_JS, alpha)
        readout = alpha.find_element(By.CSS_SELECTOR, ".widget-readout")
        assert float(readout.text) == CONTROLS["mix_alpha"].default, f"mix-back alpha starts at {readout.text}"
        assert len(panel.find_elements(By.TAG_NAME, "audio")) >= 3, "the panel shows fewer than 3 audio players"
        # read every picture's source in one script call: the kernel replaces the <img> elements while it redraws
        views = lambda: driver.execute_script(
            "return Array.from(arguments[0].querySelectorAll('img')).map(i => i.getAttribute('src'))", panel
        )
        before_views, before_readout = views(), readout.text.strip()
        assert before_views, "the panel shows no figure of the views"
        handle = alpha.find_element(By.CSS_SELECTOR, ".noUi-handle")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", panel)
        ActionChains(driver).click_and_hold(handle).move_by_offset(70, 0).release().perform()
        wait_for(lambda: readout.text.strip() != before_readout, 10, "the alpha readout to change")
        wait_for(lambda: views() and views() != before_views, 60, "the panel's views to be redrawn")
        assert float(readout.text) > CONTROLS["mix_alpha"].default
        status = panel.find_elements(By.CSS_SELECTOR, ".widget-html")
        assert not any(s.text.strip() for s in status), f"the panel reports: {[s.text for s in status]}"
        assert not _error_outputs(driver)
        assert WIDGET_ERROR not in driver.find_element(By.TAG_NAME, "body").text
        bad = [m for m in driver.execute_async_script(CHECK_MEDIA_JS) if m[2]]
        assert not bad, f"media that do not load after the slider moved: {bad}"
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
        screenshot(driver, "browser-lab-02-panel", tmp_path)
        console += console_errors(driver)
    print(f"JupyterLab: {n_code} cells run, {n_audio} audio players, {len(console)} console errors {console[:5]}")
    print(f"JupyterLab test took {time.monotonic() - started:.0f} s")


# ----------------------------------------------------------------------------------------------------------------------
# The website


@pytest.fixture(scope="module")
def site():
    """The built website's folder: ``UCLSER_SITE_DIR`` (must exist when set) or build/site/html (else skip)."""
    require_browser()
    named = os.environ.get("UCLSER_SITE_DIR")
    folder = Path(named) if named else ROOT / "build" / "site" / "html"
    folder = folder if folder.is_absolute() else ROOT / folder
    if not (folder / "index.html").is_file():
        if named:
            pytest.fail(f"UCLSER_SITE_DIR={named}: no index.html there (make site-smoke, or make course && make site)")
        pytest.skip("no website at build/site/html: make course && make site")
    return folder


WIDGETS_DRAWN_JS = """
const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
const drawn = [...document.querySelectorAll('.widget-subarea')].filter((e) => e.children.length > 0).length;
return [views, drawn, document.body.innerText.includes(arguments[0])];
"""

ANCHORS_JS = """
return [...document.querySelectorAll('[id]')].map((e) => e.id)
  .concat([...document.querySelectorAll('a[name]')].map((e) => e.name));
"""

MATHJAX_DONE_JS = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done(true));
else done(false);
"""


def _widgets_drawn(driver):
    """(widget views, views drawn, whether an error shows) once every view is drawn or an error shows, else None."""
    views, drawn, failed = driver.execute_script(WIDGETS_DRAWN_JS, WIDGET_ERROR)
    return (views, drawn, failed) if drawn >= views or failed else None


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_site_pages_load_with_their_media_widgets_and_links(site, tmp_path):
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    problems, ids, links, seen = [], {}, [], []
    with serve(site) as base, chromium(tmp_path / "chromium-profile", size=(1400, 1000)) as driver:
        rel = lambda url: url[len(base) :] or "index.html"
        queue = [base + "index.html"]
        while queue:
            page = queue.pop(0)
            if page in seen:
                continue
            seen.append(page)
            driver.get(page)
            wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, rel(page))
            try:
                wait_for(lambda: _widgets_drawn(driver), 30, f"the widgets of {rel(page)} to be drawn")
            except pytest.fail.Exception:
                pass
            views, drawn, failed = driver.execute_script(WIDGETS_DRAWN_JS, WIDGET_ERROR)
            if failed or drawn < views:
                problems.append(f"{rel(page)}: {drawn} of its {views} saved widget views drawn, error shown: {failed}")
            driver.execute_async_script(MATHJAX_DONE_JS)
            for kind, src, why in driver.execute_async_script(CHECK_MEDIA_JS):
                if why:
                    problems.append(f"{rel(page)}: {kind} {src}: {why}")
            for message in console_errors(driver):
                problems.append(f"{rel(page)}: console error: {message}")
            outside = driver.execute_script(
                "return performance.getEntriesByType('resource').map((r) => r.name)"
                f".filter((n) => !n.startsWith({base!r}) && !n.startsWith('data:') && !n.startsWith('blob:'))"
            )
            problems += [f"{rel(page)}: loads {name} from outside the site" for name in outside]
            ids[page] = set(driver.execute_script(ANCHORS_JS))
            if page.endswith("notebooks/02_augmentations.html"):
                sliders = driver.find_elements(By.CSS_SELECTOR, ".widget-slider")
                notes = driver.find_elements(By.CSS_SELECTOR, ".course-live-note")
                if views < 2 or len(sliders) != N_SLIDERS or not notes:
                    problems.append(
                        f"{rel(page)}: {drawn}/{views} widget views drawn, {len(sliders)} sliders "
                        f"(expected {N_SLIDERS}), {len(notes)} notes on running the panel live"
                    )
                else:
                    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", notes[0])
                    screenshot(driver, "browser-site-02-panel", tmp_path)
                    driver.execute_script("window.scrollTo(0, 0)")
            if rel(page) in ("index.html", "docs/method.html"):
                screenshot(driver, "browser-site-" + Path(rel(page)).stem, tmp_path)
            for href in driver.execute_script("return [...document.querySelectorAll('a[href]')].map((a) => a.href)"):
                url, fragment = urldefrag(href)
                if not url.startswith(base):
                    continue  # another site: not ours to check offline
                url = url + "index.html" if url.endswith("/") else url
                links.append((page, url, fragment))
                if url.endswith(".html") and url not in seen:
                    queue.append(url)

        for page, url, fragment in links:
            if url not in ids and _status(url) != 200:
                problems.append(f"{rel(page)}: link to {rel(url)}: HTTP {_status(url)}")
            elif fragment and url in ids and fragment not in ids[url]:
                problems.append(f"{rel(page)}: link to {rel(url)}#{fragment}: no such anchor")

    pages = [rel(p) for p in seen]
    notebooks = [f"notebooks/{p.stem}.html" for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    missing = [p for p in [*notebooks, "docs/method.html", "docs/released-code.html"] if p not in pages]
    assert not missing, f"pages not reached from the landing page: {missing}"
    assert not problems, f"{len(problems)} problems in the website:\n" + "\n".join(problems[:40])
    print(f"website: {len(pages)} pages, {len(links)} internal links, {time.monotonic() - started:.0f} s")


def test_site_search_finds_the_method(site, tmp_path):
    from selenium.webdriver.common.by import By

    with serve(site) as base, chromium(tmp_path / "chromium-profile") as driver:
        driver.get(base + "search.html?q=mix-back")
        results = wait_for(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a"), 30, "search results"
        )
        found = {a.get_attribute("href").split("#")[0].removeprefix(base) for a in results}
        assert "docs/method.html" in found, f"searching 'mix-back' finds {sorted(found)}"
        assert "notebooks/02_augmentations.html" in found, f"searching 'mix-back' finds {sorted(found)}"
        assert not console_errors(driver)
