"""The HTML report in a real browser: Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import Verdict
from harness.report import write_results
from harness.selection import Selection
from harness.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".mnn-matrix" / "screenshots"
CONFIG = {
    "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"},
                   {"id": "new", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "fp16", "flags": ["--fp16"], "tolerance": {"max_abs_ratio": 0.01}}],
    "models": [{"name": "micro-silu", "variants": ["fp32", "fp16"]}, {"name": "micro-conv", "variants": ["fp32"]},
               {"name": "micro-shape-start-end", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: `apt-get install chromium` (.ci/run does)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains):
    root = tmp_path_factory.mktemp("html")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    results = run_matrix(root / "matrix.yaml", Selection(), Workspace(root / "ws", shared_envs=workspace.envs),
                         jobs=2, fresh=True, progress=Progress(quiet=True))
    write_results(results, root / "out")
    return results, root / "out" / "results.html"


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def open_page(browser, path: Path, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("request", lambda request: problems.append(f"fetched {request.url}")
            if not request.url.startswith("file:") else None)
    page.goto(path.as_uri())
    return page, problems


@pytest.mark.parametrize(("width", "height", "name"), [(1280, 900, "desktop"), (390, 844, "phone")])
def test_clicking_a_grid_cell_drills_down_to_its_runs(report, browser, width: int, height: int, name: str) -> None:
    results, path = report
    page, problems = open_page(browser, path, width, height)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-grid.png"))
    for converter, runtime in (("new", "old"), ("old", "new")):
        cells = [c for c in results.cells if (c.converter, c.runtime) == (converter, runtime)]
        passed = sum(c.outcome.verdict == Verdict.PASS for c in cells)
        grid_cell = page.locator(f"#grid td.pair[aria-label='{converter} to {runtime}']")
        assert grid_cell.locator(".count").inner_text() == f"{passed}/{len(cells)}"
    page.locator("#grid td.pair[aria-label='new to old']").click()
    total = sum((c.converter, c.runtime) == ("new", "old") for c in results.cells)
    assert page.locator("#detail-title").inner_text() == f"Runs: new → old ({total})"
    rows = page.locator("#detail tr.run")
    shown = {(rows.nth(i).locator("td").nth(0).inner_text(), rows.nth(i).locator("td").nth(3).inner_text())
             for i in range(rows.count())}
    expected = {(c.model, c.outcome.verdict.value) for c in results.cells if (c.converter, c.runtime) == ("new", "old")}
    assert shown == expected
    assert ("micro-silu", "unsupported-op") in shown and ("micro-shape-start-end", "load-error") in shown
    page.locator("#detail details").first.click()
    assert page.locator("#detail pre").first.is_visible()
    page.screenshot(path=str(SCREENSHOTS / f"{name}-drilldown.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, "the page itself must not scroll sideways; only the tables may"
    assert not problems


def test_filters_narrow_the_grid_and_the_runs(report, browser) -> None:
    results, path = report
    page, problems = open_page(browser, path, 1280, 900)
    page.select_option("#f-model", "micro-silu")
    cells = [c for c in results.cells if c.model == "micro-silu" and (c.converter, c.runtime) == ("new", "old")]
    assert page.locator("#grid td.pair[aria-label='new to old'] .count").inner_text() == f"0/{len(cells)}"
    page.select_option("#f-verdict", "unsupported-op")
    page.select_option("#f-variant", "fp16")
    page.locator("#grid td.pair[aria-label='new to old']").click()
    assert page.locator("#detail tr.run").count() == 2  # module and session
    page.click("#f-clear")
    total = sum(1 for c in results.cells if (c.converter, c.runtime) == ("new", "old"))
    assert page.locator("#grid td.pair[aria-label='new to old'] .count").inner_text().endswith(f"/{total}")
    page.select_option("#f-op", "Unary")  # the op a failing log names
    assert page.locator("#grid td.pair[aria-label='old to old'] .count").inner_text() == "0/0"
    assert not problems


def test_the_page_is_one_self_contained_file(report) -> None:
    _, path = report
    html = path.read_text()
    assert "<script src" not in html and "<link" not in html and "http://" not in html and "https://" not in html
