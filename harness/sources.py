"""MNN source for source toolchains: a git repository (URL or local mirror) or a plain directory;
resolving a ref to a full SHA, and exporting that tree for a build that needs no network."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

UPSTREAM = "https://github.com/alibaba/MNN.git"
REPO_VARIABLE = "MNN_MATRIX_MNN_REPO"  # a local mirror or directory to use instead of each toolchain's repository


class SourceError(Exception):
    """The source cannot be resolved or exported; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """Where a toolchain's MNN comes from: `location` is a git URL, a git directory, or a plain directory."""

    location: str
    ref: str  # a tag, branch, commit, or "HEAD" for the default branch

    @classmethod
    def of(cls, repository: str, ref: str, override: str | None = None) -> Source:
        return cls(override or os.environ.get(REPO_VARIABLE) or repository, ref)

    @property
    def is_directory(self) -> bool:
        path = Path(self.location)
        return path.is_dir() and not _is_git(path)

    def resolve(self) -> str:
        """The full commit SHA of `ref` (for a plain directory: a digest of its files)."""
        if self.is_directory:
            return "dir-" + _tree_digest(Path(self.location))
        if Path(self.location).is_dir():
            return _git(["--git-dir", _git_dir(Path(self.location)), "rev-parse", "--verify",
                         f"{self.ref}^{{commit}}"], self).strip()
        refs = dict(reversed(line.split("\t")) for line in _git(["ls-remote", self.location], self).splitlines())
        for name in (f"refs/tags/{self.ref}^{{}}", f"refs/tags/{self.ref}", f"refs/heads/{self.ref}", self.ref):
            if name in refs:
                return refs[name]  # an annotated tag's peeled commit first
        if len(self.ref) == 40:
            return self.ref  # a commit: fetching it checks that it exists
        raise SourceError(f"{self.location}: no ref {self.ref!r}")

    def export(self, sha: str, destination: Path, paths: tuple[str, ...] = ()) -> list[str]:
        """Write the tree at `sha` (only `paths` in it, if given) into `destination`; return paths skipped because
        the repository lacks them."""
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir(parents=True)
        if self.is_directory:
            missing = []
            for path in paths or (".",):
                if not (Path(self.location) / path).exists():
                    missing.append(path)
                    continue
                shutil.copytree(Path(self.location) / path, destination / path, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".git"))
            return missing
        git_dir = _git_dir(Path(self.location)) if Path(self.location).is_dir() else self._fetch(sha, destination)
        archive = subprocess.run(["git", "--git-dir", git_dir, "archive", sha, *paths], capture_output=True)
        if archive.returncode == 0:
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(destination, filter="data")
            return []
        return _export_present_blobs(git_dir, sha, destination, self, paths)

    def _fetch(self, sha: str, destination: Path) -> str:
        """A shallow fetch of one commit from a remote repository into a scratch git directory."""
        scratch = destination.parent / (destination.name + ".git")
        shutil.rmtree(scratch, ignore_errors=True)
        _git(["init", "-q", "--bare", str(scratch)], self)
        _git(["--git-dir", str(scratch), "fetch", "-q", "--depth", "1", self.location, sha], self)
        return str(scratch)


def _export_present_blobs(git_dir: str, sha: str, destination: Path, source: Source, paths: tuple[str, ...] = ()
                          ) -> list[str]:
    """Export file by file, skipping blobs a partial mirror lacks (large binaries, typically)."""
    listing = _git(["--git-dir", git_dir, "ls-tree", "-r", "-z", sha, *paths], source).split("\0")
    entries = [line.split("\t", 1) for line in listing if line]
    batch = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    missing = []
    for meta, name in entries:
        mode, kind, blob = meta.split()
        if kind != "blob":
            continue
        batch.stdin.write(blob.encode() + b"\n")
        batch.stdin.flush()
        header = batch.stdout.readline().split()
        if header[1:2] == [b"missing"]:
            missing.append(name)
            continue
        data = batch.stdout.read(int(header[2]))
        batch.stdout.read(1)
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            target.symlink_to(data.decode())
        else:
            target.write_bytes(data)
            if mode == "100755":
                target.chmod(0o755)
    batch.stdin.close()
    batch.wait()
    return missing


def _git(args: list[str], source: Source) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise SourceError("git is not installed") from None
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise SourceError(f"{source.location} ({source.ref}): git {args[-2] if len(args) > 1 else args[0]}: "
                          f"{message}")
    return done.stdout


def _is_git(path: Path) -> bool:
    return ((path / "HEAD").exists() and (path / "objects").is_dir()) or (path / ".git").exists()


def _git_dir(path: Path) -> str:
    return str(path / ".git") if (path / ".git").exists() else str(path)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:40]
