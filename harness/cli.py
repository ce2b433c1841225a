"""Command line: `python -m harness matrix|report|build|publish|...` (nox sessions and the workflows call these)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from harness.config import ConfigError
from harness.modelstore import ModelError
from harness.progress import Progress
from harness.records import Results
from harness.report import read_results, write_results
from harness.report.markdown import render_diff
from harness.selection import Selection
from harness.suites import SUITES, ZOO
from harness.supervisor import default_jobs
from harness.workspace import Workspace

DEFAULT_OUT = Path("results")


def _dims(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for value in values:
        name, _, number = value.partition("=")
        if not name or not number.isdigit() or int(number) < 1:
            raise click.BadParameter(f"{value!r}: expected NAME=N with N a positive integer")
        dims[name] = int(number)
    return dims


def _shard(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if value is None:
        return ()
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise click.BadParameter(f"{value!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(index), int(count)


@click.group()
def main() -> None:
    """mnn-matrix: does a model converted by MNN X run correctly on MNN Y?"""


@main.command()
@click.option("--config", "-c", type=click.Path(path_type=Path), default=Path("matrix.yaml"), show_default=True,
              help="the matrix file")
@click.option("--toolchain", "-t", "toolchains", multiple=True, help="only these toolchains (ids; repeatable)")
@click.option("--converter", "converters", multiple=True, help="only these toolchains convert")
@click.option("--runtime", "runtimes", multiple=True, help="only these toolchains run")
@click.option("--model", "-m", "models", multiple=True,
              help="zoo model name or tag, the path of your own .onnx file, or an llm suite model (repeatable)")
@click.option("--variant", "-v", "variants", multiple=True, help="only these conversion variants")
@click.option("--api", "apis", multiple=True, type=click.Choice(["module", "session"]), help="only these APIs")
@click.option("--suite", "suites", multiple=True, type=click.Choice(list(SUITES)),
              help="zoo: the model zoo (and your models); onnx-node: ONNX's node conformance suite, where "
                   "--model names ops or cases; llm: MNN's LLM exporter x MNN.llm [default: zoo and llm, each "
                   "unless --model names none of its models, plus onnx-node when matrix.yaml enables it and no "
                   "--model is given]")
@click.option("--inputs", type=click.Path(path_type=Path, dir_okay=False), help="inputs (.npz) for your model")
@click.option("--dim", "dims", multiple=True, callback=_dims, help="a symbolic input dimension: NAME=N")
@click.option("--jobs", "-j", type=click.IntRange(1), default=default_jobs(), show_default="4 per core",
              help="cells run at once")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False),
              help="where results go [default: results/, or .mnn-matrix/results/ for a narrowed run]")
@click.option("--fresh", is_flag=True, help="ignore what earlier runs stored: convert and run every cell again")
@click.option("--reproducers/--no-reproducers", default=None,
              help="write a reproducer bundle for every failing cell to .mnn-matrix/reproducers/<suite>/ "
                   "[default: on for the zoo and llm, off for onnx-node]")
@click.option("--shard", callback=_shard, metavar="I/N",
              help="run only shard I of N (a stable subset of the cells, by key); `harness merge` joins the shards")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
def matrix(config: Path, toolchains, converters, runtimes, models, variants, apis, suites, inputs, dims, jobs, out,
           fresh: bool, reproducers: bool | None, shard: tuple[int, ...], quiet: bool) -> None:
    """Convert every model with every converter and run it under every runtime."""
    from harness.matrix import load, run_suite

    selection = Selection(tuple(toolchains), tuple(converters), tuple(runtimes), tuple(models), tuple(variants),
                          tuple(apis), inputs, dims, shard)
    workspace = Workspace.default()
    out = out or (workspace.root / "results" / ("shard-{}-of-{}".format(*shard) if shard else "")
                  if selection.narrowed or shard else DEFAULT_OUT)
    with _user_errors():
        default = load(config, Selection())
        chosen = [SUITES[name] for name in suites] or [
            suite for suite in SUITES.values() if suite.enabled(default, selection)] or [ZOO]  # ZOO says why
        for suite in chosen:
            own = selection if suites else replace(selection, models=tuple(filter(suite.owns, selection.models)))
            target = out / suite.results_dir
            bundles = workspace.root / "reproducers" / suite.name if (
                reproducers if reproducers is not None else suite.reproducers) else None
            started = time.monotonic()
            with Progress(quiet=quiet) as progress:
                results, written = run_suite(config, own, workspace, jobs, fresh, progress, suite, target,
                                             bundles, history=out if not (selection.narrowed or shard) else None)
            if results is None:
                click.echo(f"{suite.name}: nothing changed since the run that wrote {target}: its results stand "
                           f"({time.monotonic() - started:.1f}s)")
                continue
            passed = sum(c.outcome.verdict == "pass" for c in results.cells)
            phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in results.run.phases.items())
            click.echo(f"{suite.name}: {passed} of {len(results.cells)} cells pass, {results.run.resumed_cells} "
                       f"reused ({phases}, report {progress.durations.get('report', 0):.1f}s); wrote "
                       + ", ".join(str(path) for path in written))


@main.command("merge")
@click.argument("documents", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="where the merged results.json[.gz], results.md and results.html go")
def merge_command(documents: tuple[Path, ...], out: Path) -> None:
    """Join the results documents of one run's shards (`matrix --shard I/N`) into the unsharded run's document."""
    from harness.merge import MergeError, merge

    with _user_errors():
        try:
            merged = merge([_read(path, read_results) for path in documents])
        except MergeError as error:
            raise ConfigError([str(error)]) from None
        for path in write_results(merged, out):
            click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("results_json", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--baseline", metavar="PATH_OR_URL", help="compare with this earlier results.json[.gz]")
@click.option("--drift", type=float, default=1e-3, show_default=True,
              help="report passing cells whose max |Δ| / max |ref| moved by more than this")
@click.option("--fail-on-regression", is_flag=True, help="exit 1 if a cell that passed in the baseline fails now")
def report(results_json: Path | None, baseline: str | None, drift: float, fail_on_regression: bool) -> None:
    """Render results.md and results.html again; with --baseline, also a diff (diff.md)."""
    from harness.diff import changes as diff_changes

    if results_json is None:  # the default run's document, whichever size it is
        results_json = next((p for p in (DEFAULT_OUT / "results.json", DEFAULT_OUT / "results.json.gz") if p.exists()),
                            DEFAULT_OUT / "results.json")
    with _user_errors():
        results = _read(results_json, read_results)
        previous = _read(baseline, read_results) if baseline is not None else None
        for path in write_results(results, results_json.parent, previous):  # the baseline marks new findings
            click.echo(f"wrote {path}", err=True)
        if previous is None:
            return
        changes = diff_changes(previous, results, drift, baseline, str(results_json))
    text = render_diff(changes, drift)
    (results_json.parent / "diff.md").write_text(text)
    click.echo(text)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.write(text)
    if fail_on_regression and changes.regressions:
        click.echo(f"{len(changes.regressions)} cells that passed in the baseline fail now", err=True)
        sys.exit(1)


def _read(source, reader):
    try:
        return reader(source)
    except (OSError, ValueError) as error:
        raise ConfigError([f"{source}: not a readable results document: {str(error).splitlines()[0]}"]) from None


_REMOTE = click.option("--remote", required=True, envvar="MNN_MATRIX_PUBLISH_REMOTE", metavar="GIT_URL_OR_PATH",
                       help="the repository the results branch is published to (also $MNN_MATRIX_PUBLISH_REMOTE)")
_BRANCH = click.option("--branch", default="results", show_default=True, help="the published branch")


@main.command("compare-to-published")
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT)
@_REMOTE
@_BRANCH
@click.option("--drift", type=float, default=1e-3, show_default=True,
              help="report passing cells whose max |Δ| / max |ref| moved by more than this")
@click.option("--link", default="", metavar="URL",
              help="the published branch's files on the web, to link the full diffs from the issue body "
                   "(e.g. https://github.com/OWNER/REPO/blob/results)")
@click.option("--run-url", default="", help="this run's page, named in the issue body")
@click.option("--issue-body", type=click.Path(dir_okay=False, path_type=Path),
              help="when a cell regressed, write the regression issue's body here")
def compare_to_published(results_dir: Path, remote: str, branch: str, drift: float, link: str, run_url: str,
                         issue_body: Path | None) -> None:
    """Compare each suite of a run (results/, results/onnx-node/, results/llm/) with its published tables; diff.md
    beside each.

    Exit code 0: compared, nothing regressed; 3: a cell that passed now fails; 4: a suite has no published run
    yet (the first night); 1 or 2: an error. Under GitHub Actions it also sets the step outputs `regression`
    (true/false) and `baseline` (found/missing).
    """
    from harness.publish import PublishError
    from harness.publish.compare import REGRESSION, exit_code
    from harness.publish.compare import issue_body as render_issue
    from harness.publish.workflow import compare_to_published as run_comparison

    try:
        comparisons = run_comparison(results_dir, remote, branch, drift, link)
    except PublishError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    for c in comparisons:
        click.echo(f"{c.suite}: " + (f"{len(c.regressions)} newly failing, {len(c.diff.changes)} changes "
                                     f"(diff in {c.document.parent / 'diff.md'})" if c.diff
                                     else "no published run to compare with yet"))
    code = exit_code(comparisons)
    if code == REGRESSION and issue_body:
        issue_body.write_text(render_issue(comparisons, run_url))
    _step_outputs(regression=str(code == REGRESSION).lower(),
                  baseline="missing" if any(c.diff is None for c in comparisons) else "found")
    sys.exit(code)


@main.command()
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT)
@_REMOTE
@_BRANCH
@click.option("--run", "run_id", required=True, help="the run's id (GitHub: the run id)")
@click.option("--run-url", default="", help="the run's page")
@click.option("--outcome", type=click.Choice(["success", "failure", "cancelled", "skipped"]), default="success",
              show_default=True, help="how the run's matrix ended (GitHub: the matrix job's result); anything but "
                                      "success publishes no tables, only the fact that the run failed")
def publish(results_dir: Path, remote: str, branch: str, run_id: str, run_url: str, outcome: str) -> None:
    """Publish a run on the results branch: a commit on top of the published history (never a force-push).

    Each suite's tables, its document in history/ with the trend, the diff compare-to-published left beside it,
    and index.html saying which run each table is from. A failed run: nothing of it but the fact.
    Exit code 2 when the branch cannot be written or the results are stale (no newer than the published ones).
    """
    from harness.publish import PublishError
    from harness.publish.site import Run
    from harness.publish.workflow import publish as publish_run

    ok = outcome == "success"
    try:
        sha, suites = publish_run(results_dir if ok else None, remote, Run(run_id, run_url, ok=ok), branch)
    except PublishError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(f"{branch} at {sha[:12]}: " + (f"published {', '.join(suites)}" if suites
                                              else "the failed run recorded, tables unchanged"))


def _step_outputs(**outputs: str) -> None:
    """Set GitHub Actions step outputs (nothing outside a workflow)."""
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as file:
            file.writelines(f"{name}={value}\n" for name, value in outputs.items())


@main.command()
@click.option("--config", "-c", type=click.Path(path_type=Path), default=Path("matrix.yaml"), show_default=True)
@click.option("--model", "-m", "models", multiple=True, default=("micro",), show_default=True,
              help="zoo models or tags to measure with")
@click.option("--jobs", "-j", type=click.IntRange(1), default=default_jobs(), show_default="4 per core")
@click.option("--scale/--no-scale", default=True, show_default=True,
              help="time the full default matrix cold, rerun with nothing changed, and with only the newest "
                   "toolchain changed (about half an hour)")
def bench(config: Path, models: tuple[str, ...], jobs: int, scale: bool) -> None:
    """Measure the full matrix (cold, rerun, one toolchain changed), harness overhead per cell, restarts, and the
    persistent worker's speed-up; figures go to .mnn-matrix/bench.json."""
    from rich.console import Console

    from harness.bench import run_bench

    with _user_errors():
        run_bench(config, Selection(models=models), Workspace.default(), jobs, Console(stderr=True), scale)


@main.command()
@click.argument("toolchain_ids", nargs=-1)
@click.option("--config", "-c", type=click.Path(path_type=Path), default=Path("matrix.yaml"), show_default=True)
@click.option("--mnn-repo", metavar="PATH_OR_URL",
              help="take MNN from this mirror or directory instead of each toolchain's repository "
                   "(also $MNN_MATRIX_MNN_REPO)")
@click.option("--base", default=None, help="base image [default: a pinned Debian bookworm; 'debootstrap' builds "
                                           "one offline, as happens by itself when no registry is reachable]")
@click.option("--jobs", "-j", type=click.IntRange(1), help="compile jobs [default: cores, at most one per 2 GiB]")
@click.option("--save-image", type=click.Path(path_type=Path, dir_okay=False),
              help="also write the (single) built image here, gzipped, for another machine or CI job")
def build(toolchain_ids: tuple[str, ...], config: Path, mnn_repo: str | None, base: str | None, jobs: int | None,
          save_image: Path | None) -> None:
    """Build source toolchains in Docker (all of them, or those named). Exit code 1 if any build failed."""
    from harness.containers import DockerUnavailable, client
    from harness.matrix import load
    from harness.sourcebuild import PINNED_BASE
    from harness.sourcebuild import build as build_one
    from harness.sourcebuild import save_image as save

    with _user_errors():
        matrix = load(config, Selection())
        sources = [t for t in matrix.toolchains if t.kind == "source"]
        unknown = [t for t in toolchain_ids if t not in {s.id for s in sources}]
        if unknown:
            raise ConfigError([f"{t}: not a source toolchain in {config} (those are: "
                               f"{', '.join(s.id for s in sources)})" for t in unknown])
        chosen = [s for s in sources if not toolchain_ids or s.id in toolchain_ids]
        if save_image and len(chosen) != 1:
            raise ConfigError(["--save-image takes exactly one toolchain"])
        try:
            records = [build_one(spec, Workspace.default(), lambda line: click.echo(line, err=True), mnn_repo,
                                 base or PINNED_BASE, jobs) for spec in chosen]
        except DockerUnavailable as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(3)
    for record in records:
        size = f", {record.image_bytes / 2**20:.0f} MiB" if record.image_bytes else ""
        click.echo(f"{record.toolchain}: {record.status} in {record.seconds:.0f}s"
                   + (f": {record.image} (MNN {record.mnn_version}, {record.sha[:12]}{size})" if record.image
                      else f": {record.reason}"))
    if save_image and records[0].image:
        save(client(), records[0].image, save_image)
        click.echo(f"saved {records[0].image} to {save_image}")
    if any(r.status == "failed" for r in records):
        sys.exit(1)


@main.command()
def schema() -> None:
    """Print the JSON schema of results.json."""
    click.echo(json.dumps(Results.model_json_schema(), indent=2))


class _user_errors:
    """Report user mistakes as plain messages with exit code 2, never a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, _tb) -> bool:
        if isinstance(error, (ConfigError, ModelError)):
            click.echo(f"error: {error}" if isinstance(error, ModelError) else "\n".join(
                f"error: {p}" for p in error.problems), err=True)
            sys.exit(2)
        if isinstance(error, KeyboardInterrupt):
            click.echo("interrupted: finished cells are kept; run the same command again to resume", err=True)
            sys.stdout.flush()
            os._exit(130)  # now: not after threads still finishing their cell, or native libraries' exit handlers
        return False


if __name__ == "__main__":
    main()
