"""`cfxray serve`, `cfxray explain` and `cfxray app`.

`serve` starts the Triton binary and needs no client. `explain` and `app` run the clients
(`cfxray.serving.cli`: tritonclient, gradio), imported only when they run, so building the CLI
imports neither.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cfxray.errors import UserError
from cfxray.settings import add_settings, resolve


@dataclass(frozen=True)
class ServeSettings:
    """The `serve` section of params.yaml: the local Triton server and its clients."""

    model_repo: str = "model_repository"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    startup_timeout_s: float = 180.0
    url: str = "localhost:8000"  # explain/app: Triton's HTTP port (gRPC port with grpc)
    protocol: Literal["http", "grpc"] = "http"
    app_port: int = 7860
    max_upload_mb: float = 10.0


# The params.yaml sections these commands read, and their dataclasses.
SECTIONS: dict[str, type] = {"serve": ServeSettings}
CLIENT_HELP = {"url": "Triton host:port (the HTTP port for http, gRPC for grpc)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a model repository with a local Triton server (loopback)",
        description="Start the Triton Inference Server bundled with nvidia-pytriton on the "
                    "repository written by `cfxray export`, wait until every model is ready, "
                    "print the endpoints, and stop cleanly on Ctrl-C or SIGTERM. Defaults "
                    "come from the `serve` section of params.yaml.")
    add_settings(serve, ServeSettings, "serve",
                 only=("model_repo", "host", "http_port", "grpc_port", "metrics_port",
                       "startup_timeout_s"),
                 help={"host": "address to bind; 0.0.0.0 exposes the server",
                       "startup_timeout_s": "seconds to wait for the models"})
    serve.set_defaults(func=run_serve)

    explain = subparsers.add_parser(
        "explain", help="explain X-ray images through a running Triton server",
        description="Send images (any format and size the ingest step accepts; resized like "
                    "the training data) to the `explain` model and write, per image, the "
                    "counterfactual PNG, a difference heatmap over the original and a JSON of "
                    "the probabilities before and after.")
    explain.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_settings(explain, ServeSettings, "serve", only=("url", "protocol"), help=CLIENT_HELP)
    explain.add_argument("--direction", choices=("auto", "p2n", "n2p"), default="auto",
                         help="auto: towards the class the classifier does not predict")
    explain.add_argument("--out", type=Path, default=Path("outputs/explain"))
    explain.set_defaults(func=run_explain)

    app = subparsers.add_parser(
        "app", help="web page (Gradio) for explanations from a running Triton server",
        description="Upload an X-ray; see the prediction, the counterfactual, the difference "
                    "heatmap and a blend slider.")
    add_settings(app, ServeSettings, "serve",
                 only=("url", "protocol", "host", "app_port", "max_upload_mb"),
                 help={**CLIENT_HELP, "host": "address the page binds",
                       "app_port": "the page's port", "max_upload_mb": "largest accepted upload"})
    app.set_defaults(func=run_app)


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to unwind into the server's cleanup."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_serve(args: argparse.Namespace) -> int:
    from cfxray.serving.triton import LocalTritonServer, Ports

    settings = resolve(ServeSettings, args, "serve")
    model_repo = Path(settings.model_repo)
    if not model_repo.is_dir():
        raise UserError(f"model repository {model_repo} not found; run `cfxray export "
                        f"--out {model_repo}` first")
    server = LocalTritonServer(model_repo,
                               Ports(settings.http_port, settings.grpc_port,
                                     settings.metrics_port),
                               host=settings.host, startup_timeout_s=settings.startup_timeout_s)
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, _raise_stop) for s in handled}
    code = 0
    try:
        print(f"starting Triton on {settings.host} for {model_repo} ...", flush=True)
        server.start()
        endpoints = server.endpoints
        print(f"ready: models {', '.join(server.models)}\n"
              f"  HTTP     http://{endpoints['http']}  (health: /v2/health/ready)\n"
              f"  gRPC     {endpoints['grpc']}\n"
              f"  metrics  {endpoints['metrics']}\n"
              "Ctrl-C or SIGTERM stops the server.", flush=True)
        exit_code = None
        while exit_code is None:
            exit_code = server.wait(timeout=1.0)
        print(f"tritonserver exited unexpectedly (code {exit_code}):\n{server.log_tail()}",
              file=sys.stderr)
        code = 1
    except _Stop as stop:
        print(f"{stop}: stopping Triton ...", flush=True)
    finally:
        for s in handled:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt cleanup
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("stopped", flush=True)
    return code


def run_explain(args: argparse.Namespace) -> int:
    from cfxray.serving.cli import explain_command

    settings = resolve(ServeSettings, args, "serve")
    return explain_command(args.images, settings.url, settings.protocol, args.direction, args.out)


def run_app(args: argparse.Namespace) -> int:
    from cfxray.serving.cli import app_command

    s = resolve(ServeSettings, args, "serve")
    return app_command(s.url, s.protocol, s.host, s.app_port, s.max_upload_mb)
