"""Start, watch and stop the Triton Inference Server bundled with nvidia-pytriton.

The binary lives in the installed `pytriton` package (`tritonserver/bin/tritonserver`, its
shared libraries in `nvidia_pytriton.libs`, the Python backend in
`tritonserver/backends/python` and one stub per Python version in
`tritonserver/python_backend_stubs/X.Y`). As pytriton does, we assemble a backend folder
with the stub for this interpreter. The stub embeds this interpreter's libpython: the server
gets `LD_LIBRARY_PATH` with sysconfig's LIBDIR and this environment's `bin` first on PATH,
otherwise models die with `_recursion_count` errors.

The server runs in its own process group; `stop()` ends that group (SIGTERM, then SIGKILL
after a grace period) and removes the shared-memory regions of its Python stubs, which a
killed stub would leave in /dev/shm.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cfxray.errors import UserError
from cfxray.serving.local_repository import build_local_repository

LOOPBACK = "127.0.0.1"
SHM_DIR = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def pytriton_dist() -> Path:
    """The `tritonserver` folder inside the installed nvidia-pytriton (not imported)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("nvidia-pytriton is not installed; `pip install nvidia-pytriton` "
                        "(it bundles the Triton server binary)")
    dist = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (dist / "bin" / "tritonserver").exists():
        raise UserError(f"no tritonserver binary in {dist}; reinstall nvidia-pytriton")
    return dist


def _server_libs(dist: Path) -> Path:
    wheel_libs = dist.parent.parent / "nvidia_pytriton.libs"  # auditwheel's folder
    return wheel_libs if wheel_libs.is_dir() else dist / "external_libs"


def prepare_backends(dist: Path, workspace: Path) -> Path:
    """backends/python with the backend library and the stub for this Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise UserError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    backend = workspace / "backends" / "python"
    backend.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            (backend / item.name).symlink_to(item)
    shutil.copy2(stub, backend / "triton_python_backend_stub")
    return workspace / "backends"


def server_environment(dist: Path) -> dict[str, str]:
    env = dict(os.environ)
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(_server_libs(dist))]
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def port_is_free(host: str, port: int) -> bool:
    """No one listens there. SO_REUSEADDR, as servers set it, ignores TIME_WAIT leftovers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 3, host: str = LOOPBACK) -> list[int]:
    """Ports the OS reports free now (for tests and `--http-port 0`)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _die_with_parent() -> None:
    """Run in the child: have the kernel SIGTERM the server if its launcher dies.

    The kernel ties this to the launching *thread*: start servers from a thread that lives
    as long as they should (the main thread, as `cfxray serve` and the tests do).
    """
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalTritonServer:
    """A real Triton server on loopback serving a `cfxray export` repository.

    Use as a context manager; `start()` returns once every model is ready.
    """

    def __init__(self, model_repo: str | Path, ports: Ports | None = None,
                 host: str = LOOPBACK, startup_timeout_s: float = 180.0,
                 stop_timeout_s: float = 30.0, log_verbose: int = 0) -> None:
        self.model_repo = Path(model_repo)
        self.ports = ports or Ports()
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_verbose = log_verbose
        self.shm_prefix = f"cfxray-{os.getpid()}-{secrets.token_hex(4)}-"
        self.models: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace: Path | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        return {"http": f"{self.host}:{self.ports.http}", "grpc": f"{self.host}:{self.ports.grpc}",
                "metrics": f"http://{self.host}:{self.ports.metrics}/metrics"}

    @property
    def log_path(self) -> Path | None:
        return None if self._workspace is None else self._workspace / "tritonserver.log"

    def command(self, repo: Path, backends: Path) -> list[str]:
        return [
            str(pytriton_dist() / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}", f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s) - 5)}",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self) -> LocalTritonServer:
        if self._process is not None:
            raise RuntimeError("server already started")
        busy = [f"{name} {port}" for name, port in vars(self.ports).items()
                if not port_is_free(self.host, port)]
        if busy:
            raise UserError(f"ports in use on {self.host}: {', '.join(busy)}; pick others with "
                            "--http-port/--grpc-port/--metrics-port")
        dist = pytriton_dist()
        self._workspace = Path(tempfile.mkdtemp(prefix="cfxray-triton-"))
        try:
            self.models = build_local_repository(self.model_repo, self._workspace / "models")
            backends = prepare_backends(dist, self._workspace)
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(
                    self.command(self._workspace / "models", backends), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=server_environment(dist), start_new_session=True,
                    preexec_fn=_die_with_parent)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise UserError(f"tritonserver exited while starting:\n{self.log_tail()}")
            if all(self._http_ok(f"/v2/models/{m}/ready") for m in self.models) and \
                    self._http_ok("/v2/health/ready"):
                return
            time.sleep(0.25)
        raise UserError(f"tritonserver not ready after {self.startup_timeout_s:.0f}s:\n"
                        f"{self.log_tail()}")

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoints['http']}{path}", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        return self.is_alive() and self._http_ok("/v2/health/ready")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or timeout); its exit code, None while running."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """End the server's process group and remove its shared memory and workspace."""
        code = None
        process, self._process = self._process, None
        if process is not None:
            code = _end_group(process, self.stop_timeout_s)
        for leftover in SHM_DIR.glob(f"{self.shm_prefix}*"):
            leftover.unlink(missing_ok=True)
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        return code

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end_group(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM the group the server leads (it and its Python stubs), SIGKILL what remains."""
    pgid = process.pid  # start_new_session made the server the leader of its own group
    if process.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            process.wait()
    # Stubs outlive a server that crashed; they are in the same group.
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return process.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
