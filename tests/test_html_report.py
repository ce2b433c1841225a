"""The HTML report in a real browser: Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import NEUTRAL_VERDICTS, Verdict
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
    wait_ready(page)
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
    fits_the_screen(page, problems, f"{name}-drilldown")


def fits_the_screen(page, problems: list, screenshot: str) -> None:
    """Saves a full-page screenshot; the page must not scroll sideways (only its tables may) nor log errors."""
    page.screenshot(path=str(SCREENSHOTS / f"{screenshot}.png"), full_page=True)
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


@pytest.fixture(scope="module")
def node_page(tmp_path_factory: pytest.TempPathFactory):
    """A node-suite page from a synthetic results document (no MNN needed): see test_findings.node_document."""
    from test_findings import node_document

    results = node_document()
    out = tmp_path_factory.mktemp("node-html")
    write_results(results, out)
    return results, out / "results.html"


def wait_ready(page) -> None:
    """The page unpacks its cells (gzipped in the file) before its grid and filters work."""
    page.wait_for_selector("body[data-ready]", state="attached", timeout=5000)


@pytest.mark.parametrize(("width", "height", "name"), [(1280, 900, "desktop"), (390, 844, "phone")])
def test_the_node_suite_page_puts_findings_first_and_fits_the_screen(node_page, browser, width: int, height: int,
                                                                      name: str) -> None:
    _, path = node_page
    page, problems = open_page(browser, path, width, height)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"node-{name}.png"))
    headings = page.locator("main h2").all_inner_texts()
    assert headings[0] == "Findings" and headings.index("Op support") > headings.index("Converter × runtime")
    first = page.locator("#findings details").first
    assert first.is_visible() and first.bounding_box()["y"] < height  # on the first screen
    assert "converted by ≤ 3.2.0 · run on any" in first.inner_text()  # Attention: 2 cases x 2 APIs x 2 converters
    ops = page.locator("#ops tbody tr").all_inner_texts()
    assert any(row.startswith("Attention\tas-is\t2\t0/2 (≤ 3.2.0) · 2/2 (3.6.1)") for row in ops)
    assert any(row.startswith("MatMul") and "module 1/1 · session 0/1" in row for row in ops)
    page.locator("#grid td.pair[aria-label='pypi-3.6.1 to pypi-3.0.0']").click()
    fits_the_screen(page, problems, f"node-{name}-drilldown")


def test_node_suite_filters_narrow_the_grid_and_neutral_cells_count_nowhere(node_page, browser) -> None:
    results, path = node_page
    page, problems = open_page(browser, path, 1280, 900)
    cell = page.locator("#grid td.pair[aria-label='pypi-3.2.0 to pypi-3.0.0'] .count")
    counted = [c for c in results.cells if (c.converter, c.runtime) == ("pypi-3.2.0", "pypi-3.0.0")
               and c.outcome.verdict != Verdict.API_UNSUPPORTED]
    passed = sum(c.outcome.verdict == Verdict.PASS for c in counted)
    assert cell.inner_text() == f"{passed}/{len(counted)}"  # Add's session cells on 3.0.0 are not counted
    page.select_option("#f-op", "HardSwish")
    assert cell.inner_text() == "0/4"  # two forms x two APIs, none loads
    page.select_option("#f-op", "Add")
    assert cell.inner_text() == "2/2"  # two cases' module runs; their Session runs are api-unsupported
    page.locator("#grid td.pair[aria-label='pypi-3.2.0 to pypi-3.0.0']").click()
    assert page.locator("#detail tr.run").count() == 4  # the neutral cells are listed, not counted
    assert not problems


@pytest.fixture(scope="module")
def eleven_page(tmp_path_factory: pytest.TempPathFactory):
    """The page of an 11-toolchain node-suite run (650,000 cells): see test_report_document."""
    from test_report_document import eleven_toolchain_node_run

    from harness.report.html import render_html

    results = eleven_toolchain_node_run()
    path = tmp_path_factory.mktemp("eleven-html") / "results.html"
    path.write_text(render_html(results))
    return results, path


def test_an_eleven_toolchain_page_expands_its_grouped_cells_into_the_grid(eleven_page, browser) -> None:
    results, path = eleven_page
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready]", state="attached", timeout=30000)
    for converter, runtime in (("pypi-3.4.1", "src-2.9.4"), ("src-latest", "pypi-3.5.0")):
        cells = [c for c in results.cells if (c.converter, c.runtime) == (converter, runtime)]
        counted = [c for c in cells if c.outcome.verdict not in NEUTRAL_VERDICTS]
        passed = sum(c.outcome.verdict == Verdict.PASS for c in counted)
        grid_cell = page.locator(f"#grid td.pair[aria-label='{converter} to {runtime}']")
        assert grid_cell.locator(".count").inner_text() == f"{passed}/{len(counted)}"
    grid_cell.click()
    assert page.locator("#detail-title").inner_text() == f"Runs: latest → 3.5.0 ({len(cells)})"
    failing = {c.model for c in cells if c.outcome.verdict != Verdict.PASS}
    first = page.locator("#detail tr.run").first.locator("td")
    assert first.nth(0).inner_text() in failing and first.nth(3).inner_text() != "pass"  # failures first
    assert not problems
