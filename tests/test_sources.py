"""Source toolchains' MNN source: ref resolution and export, against a throwaway git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.sources import REPO_VARIABLE, Source, SourceError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits, an annotated tag, a lightweight tag and a second branch."""
    repo = tmp_path / "mnn"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "include").mkdir()
    (repo / "include" / "version.h").write_text("2.9.4\n")
    (repo / "big.bin").write_bytes(b"\0" * 1000)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "2.9.4")
    git(repo, "tag", "-a", "3.0.1", "-m", "release")  # annotated: ls-remote lists its peeled commit too
    (repo / "include" / "version.h").write_text("3.6.1\n")
    git(repo, "commit", "-qam", "3.6.1")
    git(repo, "tag", "light")
    git(repo, "branch", "feature", "HEAD~1")
    return repo


def test_refs_resolve_to_full_shas_in_a_local_repository(repo: Path) -> None:
    first, second = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    assert Source(str(repo), "3.0.1").resolve() == first  # the commit, not the annotated tag object
    assert Source(str(repo), "light").resolve() == second
    assert Source(str(repo), "HEAD").resolve() == second  # 'latest': the default branch
    assert Source(str(repo), "feature").resolve() == first
    assert Source(str(repo), first[:10]).resolve() == first
    with pytest.raises(SourceError, match="nope"):
        Source(str(repo), "nope").resolve()


def test_refs_resolve_through_a_remote_url(repo: Path) -> None:
    url = repo.as_uri()  # file:// is fetched like https://
    assert Source(url, "3.0.1").resolve() == git(repo, "rev-parse", "HEAD~1")
    assert Source(url, "HEAD").resolve() == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("location", ["path", "url"])
def test_export_writes_the_tree_at_a_commit(repo: Path, tmp_path: Path, location: str) -> None:
    source = Source(str(repo) if location == "path" else repo.as_uri(), "3.0.1")
    assert source.export(source.resolve(), tmp_path / "src") == []
    assert (tmp_path / "src" / "include" / "version.h").read_text() == "2.9.4\n"
    assert not (tmp_path / "src" / ".git").exists()


def test_export_from_a_partial_mirror_skips_the_blobs_it_lacks(repo: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(mirror)], check=True)
    blob = git(repo, "rev-parse", "HEAD:big.bin")
    for pack in (mirror / "objects" / "pack").glob("*"):
        pack.unlink()  # loose objects only, so that one blob can go missing
    subprocess.run(["git", "-C", str(repo), "push", "-q", str(mirror), "master", "--tags"], check=True)
    (mirror / "objects" / blob[:2] / blob[2:]).unlink(missing_ok=True)
    source = Source(str(mirror), "HEAD")
    missing = source.export(source.resolve(), tmp_path / "src")
    assert missing == ["big.bin"]
    assert (tmp_path / "src" / "include" / "version.h").read_text() == "3.6.1\n"


def test_a_plain_directory_is_a_source_too(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "include").mkdir(parents=True)
    (plain / "include" / "version.h").write_text("x\n")
    source = Source(str(plain), "HEAD")
    digest = source.resolve()
    assert digest.startswith("dir-") and source.resolve() == digest
    source.export(digest, tmp_path / "src")
    assert (tmp_path / "src" / "include" / "version.h").exists()
    # a directory it lacks is reported, as a git source reports it, not raised
    assert source.export(digest, tmp_path / "part", ("include", "transformers/llm/export")) == [
        "transformers/llm/export"]
    assert (tmp_path / "part" / "include" / "version.h").exists()


def test_a_mirror_can_replace_the_repository(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Source.of("https://github.com/alibaba/MNN.git", "HEAD", override=str(repo)).location == str(repo)
    monkeypatch.setenv(REPO_VARIABLE, str(repo))
    assert Source.of("https://github.com/alibaba/MNN.git", "HEAD").resolve() == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("location", ["local", "url"])
def test_export_can_take_one_directory_of_the_tree(repo: Path, tmp_path: Path, location: str) -> None:
    """What the llm suite takes of each version: its exporter's directory, not the whole tree."""
    source = Source(str(repo) if location == "local" else f"file://{repo}", "3.0.1")
    assert source.export(source.resolve(), tmp_path / "out", ("include",)) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["include"]
    assert (tmp_path / "out" / "include" / "version.h").read_text() == "2.9.4\n"
