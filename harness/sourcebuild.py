"""Building source toolchains in Docker: MNN at a resolved commit, compiled in a container with no
network, installed into a toolchain image tagged by commit and recipe.

    base image (pinned, or debootstrap offline) -> builder image -> compile (ccache) -> toolchain image

A second build of the same commit with the same recipe finds its image and does nothing. Every build
writes `<workspace>/builds/<id>/status.json` (and build.log), which the matrix reads when an image is
missing, so a failed build becomes its toolchain's row, with the reason and the log tail.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker.errors

from harness import containers
from harness.config import SourceSpec
from harness.judge import tail
from harness.sources import Source, SourceError
from harness.workspace import Workspace

ASSETS = Path(__file__).with_name("docker")
PINNED_BASE = "debian:bookworm-20241202-slim"
OFFLINE_BASE = "mnn-matrix/base:bookworm-debootstrap"
NUMPY_VERSION = "2.4.6"
LABEL = "org.mnn-matrix"
Log = Callable[[str], None]


class BuildError(Exception):
    """A build step failed; the message says which."""


@dataclass
class BuildRecord:
    """What a build came to; kept as status.json beside its log."""

    toolchain: str
    status: str  # built, cached, failed
    reason: str = ""
    repository: str = ""
    ref: str = ""
    sha: str = ""
    image: str = ""
    mnn_version: str = ""
    base: str = ""
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    image_bytes: int = 0
    missing_files: list[str] = field(default_factory=list)  # blobs a partial mirror lacked
    log_tail: str = ""


def build_dir(workspace: Workspace, toolchain: str) -> Path:
    return workspace.root / "builds" / toolchain


def read_record(workspace: Workspace, toolchain: str) -> BuildRecord | None:
    path = build_dir(workspace, toolchain) / "status.json"
    return BuildRecord(**json.loads(path.read_text())) if path.exists() else None


def default_jobs() -> int:
    """Compile jobs the machine can hold: one per core, and at most one per 2 GiB of memory."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(os.cpu_count() or 1, memory // (2 << 30)))


def recipe(base_id: str) -> str:
    """What a toolchain image depends on besides the MNN commit: the build files, base image, numpy."""
    files = [(ASSETS / name).read_text() for name in ("builder.Dockerfile", "build-mnn.sh", "runtime.Dockerfile")]
    return hashlib.sha256(json.dumps([files, base_id, NUMPY_VERSION]).encode()).hexdigest()


def find_image(client, toolchain: str, recipe_digest: str | None = None):
    """The newest toolchain image built for `toolchain` (with `recipe_digest`, if given), or None."""
    labels = [f"{LABEL}.toolchain={toolchain}"] + ([f"{LABEL}.recipe={recipe_digest}"] if recipe_digest else [])
    images = client.images.list(filters={"label": labels})
    return max(images, key=lambda image: image.attrs["Created"], default=None)


def build(spec: SourceSpec, workspace: Workspace, log: Log, repository: str | None = None,
          base: str = PINNED_BASE, jobs: int | None = None) -> BuildRecord:
    """Build one source toolchain (or find it built); the record says how it went. Never raises for a
    failed build: only a missing Docker daemon is raised (DockerUnavailable). A cache hit leaves the
    log and record of the build that made the image in place."""
    started = time.monotonic()
    directory = build_dir(workspace, spec.id)
    directory.mkdir(parents=True, exist_ok=True)
    source = Source.of(spec.repository, spec.ref, repository)
    record = BuildRecord(spec.id, "failed", repository=source.location, ref=spec.ref)
    client = containers.client()
    attempt = directory / "attempt.log"
    with attempt.open("w") as log_file:
        def say(line: str) -> None:
            log(line)
            log_file.write(line.rstrip("\n") + "\n")
            log_file.flush()
        try:
            record.sha = source.resolve()
            say(f"{spec.id}: {source.location} {spec.ref} is {record.sha}")
            base_ref = ensure_base(client, base, say)
            record.base = base_ref
            digest = recipe(client.images.get(base_ref).id)
            tag = f"mnn-matrix/{spec.id}:{record.sha[:12]}-{digest[:8]}"
            if client.images.list(name=tag):
                say(f"{spec.id}: {tag} is already built")
                record.status, record.image = "cached", tag
            else:
                record.missing_files = source.export(record.sha, directory / "src")
                if record.missing_files:
                    say(f"{spec.id}: the repository lacks {len(record.missing_files)} files; built without them: "
                        + ", ".join(record.missing_files))
                builder = build_image(client, "builder.Dockerfile", [ASSETS / "build-mnn.sh"],
                                      f"mnn-matrix/builder:{digest[:12]}", {"BASE": base_ref}, {}, say)
                record.timings = compile_mnn(client, builder, directory, workspace.root / "ccache",
                                             _declared_version(directory / "src"), jobs or default_jobs(), say)
                artifacts = [*(directory / "out").glob("*.whl"), directory / "out" / "MNNConvert"]
                build_image(client, "runtime.Dockerfile", artifacts, tag, {"BASE": base_ref}, {
                    f"{LABEL}.toolchain": spec.id, f"{LABEL}.sha": record.sha, f"{LABEL}.ref": spec.ref,
                    f"{LABEL}.repository": source.location, f"{LABEL}.recipe": digest}, say)
                record.status, record.image = "built", tag
            record.mnn_version = check_version(client, record.image, spec.version)
            record.image_bytes = client.images.get(record.image).attrs["Size"]
            say(f"{spec.id}: {record.status} {record.image} (MNN {record.mnn_version}, "
                f"{record.image_bytes / 2**20:.0f} MiB)")
        except (BuildError, SourceError, docker.errors.DockerException) as error:
            record.status, record.reason = "failed", str(error).strip().splitlines()[0][:300]
            say(f"{spec.id}: build failed: {error}")
    record.seconds = round(time.monotonic() - started, 1)
    if record.status == "failed":
        record.log_tail = tail(attempt.read_text(errors="replace"), 40)
    kept = read_record(workspace, spec.id)
    if record.status == "cached" and kept is not None and kept.image == record.image:
        attempt.unlink()
    else:
        attempt.replace(directory / "build.log")
        (directory / "status.json").write_text(json.dumps(asdict(record), indent=1))
    return record


def ensure_base(client, base: str, say: Log) -> str:
    """The base image to build on: `base`, pulled if missing; with no registry, one made by debootstrap."""
    if base == "debootstrap":
        return debootstrap_base(client, say)
    try:
        client.images.get(base)
        return base
    except docker.errors.ImageNotFound:
        pass
    try:
        say(f"pulling {base}")
        client.images.pull(base)
        return base
    except docker.errors.APIError as error:
        say(f"cannot pull {base} ({str(error).splitlines()[0][:160]}): offline, so building the base with debootstrap")
        return debootstrap_base(client, say)


def debootstrap_base(client, say: Log) -> str:
    """A minimal Debian bookworm image from debootstrap and `docker import` (needs root and debootstrap)."""
    try:
        client.images.get(OFFLINE_BASE)
        return OFFLINE_BASE
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise BuildError("no registry for the base image, and offline mode needs root and debootstrap "
                         "(`apt-get install debootstrap`), or pass --base with an image you have")
    with tempfile.TemporaryDirectory(prefix="mnn-matrix-rootfs-") as rootfs:
        say(f"debootstrap bookworm from {_debian_mirror()}")
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, _debian_mirror()],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"debootstrap failed: {tail(done.stdout + done.stderr, 3)}")
        archive = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
    repository, tag = OFFLINE_BASE.split(":")
    client.api.import_image_from_data(archive, repository=repository, tag=tag)
    return OFFLINE_BASE


def build_image(client, dockerfile: str, files: list[Path], tag: str, args: dict, labels: dict, say: Log) -> str:
    """`docker build` of an image from one of our Dockerfiles, with `files` and the host CA bundle as context."""
    with tempfile.TemporaryDirectory(prefix="mnn-matrix-context-") as context:
        shutil.copy(ASSETS / dockerfile, context)
        shutil.copy(_ca_bundle(), Path(context) / "ca-bundle.crt")
        for path in files:
            if not path.exists():
                raise BuildError(f"missing build artifact {path.name}")
            shutil.copy(path, context)
        say(f"docker build {tag} ({dockerfile})")
        try:
            _, output = client.images.build(path=context, dockerfile=dockerfile, tag=tag, rm=True, labels=labels,
                                            buildargs={**args, "NUMPY_VERSION": NUMPY_VERSION})
        except docker.errors.BuildError as error:
            for chunk in error.build_log:
                say(chunk.get("stream", chunk.get("error", "")).rstrip())
            raise BuildError(f"docker build of {tag} failed: {error.msg}") from None
        for chunk in output:
            if chunk.get("stream", "").strip():
                say(chunk["stream"].rstrip())
    return tag


def compile_mnn(client, builder: str, directory: Path, ccache: Path, version: str, jobs: int, say: Log) -> dict:
    """Run the build script in the builder with no network; check for the artifacts ourselves."""
    out = directory / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ccache.mkdir(parents=True, exist_ok=True)
    say(f"compiling MNN {version} with {jobs} jobs")
    container = client.containers.run(
        builder, ["build-mnn.sh", version], detach=True, network_mode="none", environment={"JOBS": str(jobs)},
        user=f"{os.getuid()}:{os.getgid()}", volumes={
            str(directory / "src"): {"bind": "/src", "mode": "rw"}, str(out): {"bind": "/out", "mode": "rw"},
            str(ccache): {"bind": "/ccache", "mode": "rw"}})
    try:
        for line in container.logs(stream=True, follow=True):
            say(line.decode(errors="replace").rstrip())
        code = container.wait()["StatusCode"]
    finally:
        container.remove(force=True)
    if code != 0:
        raise BuildError(f"compiling MNN failed (exit code {code}); see the build log")
    if not list(out.glob("*.whl")) or not (out / "MNNConvert").exists():
        raise BuildError("the build finished without a PyMNN wheel and MNNConvert")
    return json.loads((out / "timings.json").read_text())


def check_version(client, image: str, expected: str) -> str:
    """The version the built library reports; it must be the toolchain's (unless that is 'latest')."""
    output = client.containers.run(image, ["python", "-c", "import MNN, _tools; print('VERSION', MNN.version())"],
                                   network_mode="none", remove=True).decode()
    version = next((line.split()[1] for line in output.splitlines() if line.startswith("VERSION ")), output.strip())
    if expected != "latest" and version != expected:
        raise BuildError(f"the built library reports MNN {version}, not {expected}")
    return version


def save_image(client, image: str, path: Path) -> None:
    """`docker save | gzip`, for moving a toolchain between CI jobs."""
    with gzip.open(path, "wb", compresslevel=3) as out:
        for chunk in client.images.get(image).save(named=True):
            out.write(chunk)


def _declared_version(source: Path) -> str:
    header = (source / "include" / "MNN" / "MNNDefine.h").read_text()
    parts = {line.split()[1]: line.split()[2] for line in header.splitlines()
             if line.startswith("#define MNN_VERSION_") and len(line.split()) > 2}
    return ".".join(parts[f"MNN_VERSION_{p}"] for p in ("MAJOR", "MINOR", "PATCH"))


def _ca_bundle() -> Path:
    """The CA bundle the host's pip trusts (proxies re-sign TLS), passed to pip steps in containers."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise BuildError("no CA bundle found for pip in the containers: set PIP_CERT to one")


def _debian_mirror() -> str:
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["deb"] and "debian" in line:
                return next(w for w in words[1:] if w.startswith("http"))
            if line.startswith("URIs:") and "debian" in line and "security" not in line:
                return words[1]
    return "http://deb.debian.org/debian"
