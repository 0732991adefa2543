"""The Compose stack's harness: a Docker daemon of the test's own, the images built offline, and
the stack of deploy/compose.yaml up and down.

No image registry is reachable here and pip inside ``docker build`` cannot reach PyPI (the
build has no network, and the host's TLS trust is not the image's). So:

- base images come from ``debootstrap --variant=minbase bookworm`` and ``docker import``: one
  with python3 for the project's images (their ``BASE_IMAGE``), one with Debian's PostgreSQL,
  Redis, HAProxy and Prometheus standing in for the official images (compose.stand-ins.yaml);
- pip in the build installs from a wheelhouse made on the host and served on loopback to a build
  on the host's network.

What is expensive is kept under ``ASRGW_DEPLOY_CACHE`` (default ``asrgw/deploy`` in the user's
cache directory, ``$XDG_CACHE_HOME`` or ``~/.cache``, so that every clone on a machine shares it,
as pip's cache is shared): the packages debootstrap fetched (``debs/``), the two root
filesystems (``*.tar``), the wheelhouse (``wheels/<key>/``) and the daemon's data root
(``docker/``), where the images built and their layers stay, so a run after a change of code
rebuilds the project's layers only. The
daemon's sockets, state and pid file live in a temporary directory; nothing runs afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.parser import HeaderParser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.fixtures.processes import ROOT

USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
CACHE = Path(os.environ.get("ASRGW_DEPLOY_CACHE") or USER_CACHE / "asrgw" / "deploy")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_IMAGE = "asrgw-test-base:bookworm"
SERVICES_IMAGE = "asrgw-test-services:bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
SERVICES_PACKAGES = ("postgresql-15", "redis-server", "haproxy", "prometheus")
# Nothing in the containers reads these (Prometheus' web UI scripts included: the API is used).
SLIMMED = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/javascript",
    "var/cache/apt/archives",
    "var/lib/apt/lists",
)
# What the images install: the node's extra (the gateway's dependencies are a subset).
IMAGE_EXTRA = "node"
BUILD_REQUIREMENTS = ("setuptools>=77", "wheel")
# Where the build's pip finds the wheelhouse (the build runs on the host's network).
WHEELHOUSE_ADDRESS = ("127.0.77.1", 8377)
# Set on the images `make images` builds, never on their build stages.
TITLE_LABEL = "org.opencontainers.image.title"
COMPOSE_FILES = (
    ROOT / "deploy" / "compose.yaml",
    ROOT / "tests" / "deploy" / "compose.stand-ins.yaml",
)


def run(arguments: Sequence[str | Path], **options: object) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; its output is returned, and shown when it fails."""
    completed = subprocess.run(
        [str(argument) for argument in arguments],
        capture_output=True,
        text=True,
        check=False,
        **options,  # type: ignore[call-overload]
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, arguments))} exited {completed.returncode}:\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
        )
    return completed


def root_filesystem(name: str, packages: Sequence[str]) -> Path:
    """A tarball of a minimal bookworm with ``packages``, made once by debootstrap."""
    tarball = CACHE / f"{name}-bookworm.tar"
    if tarball.exists():
        return tarball
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=f"{name}-") as work:
        root = Path(work) / "root"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={CACHE / 'debs'}",
                f"--include={','.join(packages)}",
                "bookworm",
                root,
                DEBIAN_MIRROR,
            ],
            timeout=1800,
        )
        for path in SLIMMED:
            shutil.rmtree(root / path, ignore_errors=True)
        partial = Path(work) / "rootfs.tar"
        run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."])
        partial.replace(tarball)
    return tarball


def wheelhouse(python_version: str) -> Path:
    """Wheels of everything the images install, resolved here for ``python_version`` (the base
    image's), made once for each set of requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"][IMAGE_EXTRA]]
    key = hashlib.sha256(json.dumps([requirements, python_version]).encode()).hexdigest()[:16]
    directory = CACHE / "wheels" / key
    if directory.exists():
        return directory
    work = directory.with_name(f"{key}.partial")
    shutil.rmtree(work, ignore_errors=True)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", work]
    run([*pip_wheel, f".[{IMAGE_EXTRA}]", *BUILD_REQUIREMENTS], cwd=ROOT, timeout=1800)
    for own in work.glob("asr_billing_gateway-*.whl"):
        own.unlink()
    # Markers were evaluated for this interpreter; the image's may need more (an older patch
    # release, for one).
    missing = requirements_only_for(work, python_version)
    if missing:
        run([*pip_wheel, *missing], cwd=ROOT, timeout=1800)
    work.replace(directory)
    return directory


def requirements_only_for(wheels: Path, python_version: str) -> list[str]:
    """Requirements of the wheels whose markers hold for ``python_version`` but not here."""
    here = default_environment()
    there = {
        **here,
        "python_full_version": python_version,
        "python_version": ".".join(python_version.split(".")[:2]),
    }
    missing: set[str] = set()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            # The wheel's own, not those of packages it vendors.
            (metadata,) = [
                name
                for name in archive.namelist()
                if name.endswith(".dist-info/METADATA") and name.count("/") == 1
            ]
            headers = HeaderParser().parsestr(archive.read(metadata).decode())
        for line in headers.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or "extra" in str(marker):
                continue
            if marker.evaluate(there) and not marker.evaluate(here):
                missing.add(f"{requirement.name}{requirement.specifier}")
    return sorted(missing)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_arguments: object) -> None:
        """pip's requests are not worth a line each on stderr."""


@contextmanager
def served(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on loopback, for pip's --find-links; its URL, always the same:
    the URL is a build argument, and a build argument that changes defeats the layer cache."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(WHEELHOUSE_ADDRESS, handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = WHEELHOUSE_ADDRESS
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class DockerDaemon:
    """``dockerd`` with its own socket, state and pid file under ``state``, and its data root
    in the cache. It leaves the host's firewall alone (no iptables rules, no forwarding): the
    containers talk over their bridge, and published ports go through docker-proxy."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.socket = state / "docker.sock"
        self.data_root = CACHE / "docker"
        self.environment = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(state / "client"),
            # The classic builder: BuildKit needs buildx, which no registry here provides.
            "DOCKER_BUILDKIT": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        with (self.state / "dockerd.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.state / 'exec'}",
                    f"--pidfile={self.state / 'dockerd.pid'}",
                    f"--host=unix://{self.socket}",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-forward=false",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while subprocess.run(
            ["docker", "version"], env=self.environment, capture_output=True, check=False
        ).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return (self.state / "dockerd.log").read_text(errors="replace")[-4000:]

    def docker(self, *arguments: str | Path, timeout: float = 600) -> str:
        return run(["docker", *arguments], env=self.environment, timeout=timeout).stdout

    def has_image(self, name: str) -> bool:
        return (
            subprocess.run(
                ["docker", "image", "inspect", name],
                env=self.environment,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def stop(self) -> None:
        """Stop the daemon, and unmount what it leaves mounted in its state directory (the
        network namespace it keeps bound under exec-root/netns)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for mount_point in reversed(self.mounts()):
            run(["umount", mount_point])

    def mounts(self) -> list[str]:
        """Mount points inside the state directory, in the order they were mounted."""
        with open("/proc/self/mounts") as table:
            points = [line.split()[1] for line in table]
        return [point for point in points if point.startswith(f"{self.state}/")]


def import_image(daemon: DockerDaemon, name: str, tarball: Path) -> None:
    if not daemon.has_image(name):
        daemon.docker("import", tarball, name)


def build_images(daemon: DockerDaemon) -> None:
    """``make images`` on the base image, pip fed from the wheelhouse."""
    import_image(daemon, BASE_IMAGE, root_filesystem("base", BASE_PACKAGES))
    python_version = daemon.docker(
        "run", "--rm", "--network=none", BASE_IMAGE, "python3", "-c",
        "import platform; print(platform.python_version())",
    ).strip()  # fmt: skip
    with served(wheelhouse(python_version)) as wheels:
        build_arguments = (
            f"--network=host --build-arg BASE_IMAGE={BASE_IMAGE} "
            f"--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS={wheels}"
        )
        built = run(
            ["make", "--no-print-directory", "images", f"IMAGE_BUILD_ARGS={build_arguments}"],
            cwd=ROOT,
            env=daemon.environment,
            timeout=3600,
        ).stdout
    # The build stages' images (untagged) are the next build's layer cache: those this build
    # made or used stay, any other untagged image (an earlier build) goes.
    # (Removing a stale stage can leave its parent stage dangling: hence the rounds.)
    used = set(re.findall(r"^ ---> ([0-9a-f]{12})$", built, re.MULTILINE))
    while (
        stale := set(daemon.docker("image", "ls", "--quiet", "--filter", "dangling=true").split())
        - used
    ):
        daemon.docker("image", "rm", *sorted(stale))
    import_image(daemon, SERVICES_IMAGE, root_filesystem("services", SERVICES_PACKAGES))
