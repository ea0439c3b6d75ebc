"""Container images built from this repository: a Debian base, the pause image, the operator and the worker.

No registry is reachable, so the base is made from Debian's packages (``mmdebstrap --variant=minbase``) and
imported; the others are ``podman build``s of the repository's Containerfiles on top of it. Each image is
tagged with the project version and a content digest of its inputs (its Containerfile, the files it copies,
its base's digest); podman's storage lives under ``$GOODPUT_CACHE/podman``, so a second run finds every
digest tag and builds nothing. ``python -m e2e.images`` (``make images``) builds them and prints sizes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from e2e import build

REPO = Path(__file__).resolve().parent.parent
STORAGE = build.CACHE_ROOT / "podman"
RUNROOT = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "goodput-podman"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")


@dataclass(frozen=True)
class Image:
    """One image: its repository name, how it is built and which repository files it reads."""

    name: str
    containerfile: Path | None  # None: the Debian base, from mmdebstrap
    inputs: tuple[str, ...]  # files and folders (relative to the repository) the build copies
    base: str | None = None  # the name of the image it is built FROM


def copied(containerfile: Path) -> tuple[str, ...]:
    """The repository paths a Containerfile's COPY instructions read, its build context being the repository
    (a COPY --from reads another stage)."""
    paths: list[str] = []
    for line in containerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            paths += [word for word in words[1:-1] if not word.startswith("--")]
    return tuple(paths)


BASE = Image("localhost/goodput/debian", None, ())
# the pause image copies a binary built from its Go sources: those are its inputs
PAUSE = Image("localhost/goodput/pause", REPO / "e2e" / "pause" / "Containerfile", ("e2e/pause",))
OPERATOR_FILE = REPO / "operator" / "Dockerfile"
OPERATOR = Image("ghcr.io/goodput/operator", OPERATOR_FILE, copied(OPERATOR_FILE), base=BASE.name)
WORKER_FILE = REPO / "worker_image" / "Dockerfile"
WORKER = Image("ghcr.io/goodput/worker", WORKER_FILE, copied(WORKER_FILE), BASE.name)
IMAGES = (BASE, PAUSE, OPERATOR, WORKER)


def version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def podman(*args: str) -> list[str]:
    """podman on its own storage under the cache, with this host's facts: cgroupfs, runc, no journald."""
    return [
        "podman",
        f"--root={STORAGE / 'storage'}",
        f"--runroot={RUNROOT}",
        "--storage-driver=overlay",
        "--cgroup-manager=cgroupfs",
        "--runtime=runc",
        "--events-backend=file",
        *args,
    ]


def files(image: Image) -> list[Path]:
    """Every file the build reads, in a stable order (bytecode caches excluded)."""
    found: list[Path] = []
    for entry in image.inputs:
        path = REPO / entry
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc"]


def digest(image: Image) -> str:
    """sha256 over what the build reads: a change in any input (or in the base) changes the tag."""
    h = hashlib.sha256(image.name.encode())
    if image.containerfile is None:
        h.update(f"mmdebstrap --variant=minbase {SUITE} {','.join(BASE_PACKAGES)}".encode())
    else:
        h.update(image.containerfile.read_bytes())
    for path in files(image):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    if image.base is not None:
        h.update(digest(next(i for i in IMAGES if i.name == image.base)).encode())
    return h.hexdigest()[:12]


def tag(image: Image) -> str:
    """``name:VERSION-DIGEST``: what the stack loads and the pods name."""
    return f"{image.name}:{version()}-{digest(image)}"


def exists(reference: str) -> bool:
    return subprocess.run(podman("image", "exists", reference), check=False).returncode == 0


def log(message: str) -> None:
    print(f"[e2e.images] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")


def build_base(reference: str) -> None:
    """mmdebstrap's minbase with Python, streamed into ``podman import``."""
    for tool in ("mmdebstrap", "podman"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is not installed: run `make system-deps`")
    rootfs = build.CACHE_ROOT / "images" / f"debian-{SUITE}.tar"
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    include = ",".join(BASE_PACKAGES)
    try:
        run(["mmdebstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs)], "mmdebstrap")
        run(podman("import", str(rootfs), reference), "podman import")
    finally:
        rootfs.unlink(missing_ok=True)


def build_from_file(image: Image, reference: str) -> None:
    """``podman build`` with chroot isolation (no cgroups, no nested runtime) and the host's CA bundle."""
    context = REPO
    argv = podman("build", "--isolation=chroot", "--network=host", "--layers", "-f", str(image.containerfile))
    if image.base is not None:
        argv.append(f"--build-arg=BASE={tag(next(i for i in IMAGES if i.name == image.base))}")
    if image is PAUSE:
        context = build.CACHE_ROOT / "images" / "pause"
        context.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0"}
        go = ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(context / "pause"), "."]
        subprocess.run(go, cwd=REPO / "e2e" / "pause", env=env, check=True)
    if HOST_CA.exists():  # a TLS-inspecting proxy's CA is in the host's bundle only
        argv += [f"--volume={HOST_CA}:/run/host-ca.crt:ro", "--build-arg=REQUESTS_CA_BUNDLE=/run/host-ca.crt"]
    argv += [f"--tag={reference}", f"--tag={image.name}:{version()}", str(context)]
    run(argv, f"podman build {image.name}")


def ensure(image: Image) -> tuple[str, float]:
    """The image's digest tag, building it first if podman's storage lacks it; seconds spent building."""
    reference = tag(image)
    if exists(reference):
        return reference, 0.0
    if image.base is not None:
        ensure(next(i for i in IMAGES if i.name == image.base))
    log(f"building {reference}")
    began = time.monotonic()
    if image.containerfile is None:
        build_base(reference)
    else:
        build_from_file(image, reference)
    seconds = time.monotonic() - began
    log(f"built {reference} in {seconds:.0f}s")
    for stale in stale_tags(image, listed(image.name)):  # the layers they share with the new one stay
        subprocess.run(podman("rmi", stale), capture_output=True, check=False)
    return reference, seconds


def listed(name: str) -> list[str]:
    out = podman("images", "--format={{.Repository}}:{{.Tag}}", name)
    return subprocess.run(out, capture_output=True, text=True, check=False).stdout.split()


def stale_tags(image: Image, references: list[str]) -> list[str]:
    """Digest tags of ``image`` other than the current one: what earlier inputs built."""
    prefix, current = f"{image.name}:{version()}-", tag(image)
    return [r for r in references if r.startswith(prefix) and r != current]


def size_bytes(reference: str) -> int:
    out = subprocess.run(
        podman("image", "inspect", "--format={{.Size}}", reference),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def ensure_all() -> dict[str, str]:
    """Digest tags of every image, keyed by repository name (built where missing)."""
    return {image.name: ensure(image)[0] for image in IMAGES}


def main() -> None:
    for image in IMAGES:
        reference, seconds = ensure(image)
        built = f"built in {seconds:.0f}s" if seconds else "cached"
        print(f"{reference}  {size_bytes(reference) / 1e6:,.0f} MB  {built}")


if __name__ == "__main__":
    main()
