"""The published branch as a git working copy: checked out from a remote (GitHub, or a local bare repository in
tests), then a commit per run pushed on top. Never a force-push: history grows, a run at a time."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.publish import PublishError

AUTHOR = ("-c", "user.name=mnn-matrix", "-c", "user.email=mnn-matrix@users.noreply.github.com")


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git; PublishError with its message when it fails."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise PublishError(f"git {args[0]} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def exists(remote: str, branch: str) -> bool:
    """Whether the remote has the branch (it has not before the first publish)."""
    return bool(git("ls-remote", "--heads", remote, f"refs/heads/{branch}").strip())


def checkout(remote: str, branch: str, into: Path) -> bool:
    """The branch's newest commit checked out in `into`; True if it existed. Before the first publish `into` is
    a new repository whose first commit will create the branch."""
    if exists(remote, branch):
        git("clone", "--quiet", "--depth", "1", "--branch", branch, "--single-branch", remote, str(into))
        return True
    into.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", cwd=into)
    git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=into)
    git("remote", "add", "origin", remote, cwd=into)
    return False


def commit_and_push(workdir: Path, branch: str, message: str) -> str:
    """Commit everything in `workdir` on top of the branch and push it (fast-forward only); returns the SHA."""
    git("add", "--all", cwd=workdir)
    git(*AUTHOR, "commit", "--quiet", "--allow-empty", "-m", message, cwd=workdir)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=workdir)
    return git("rev-parse", "HEAD", cwd=workdir).strip()
