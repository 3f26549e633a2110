"""`cfxray serve`, `cfxray explain` and `cfxray app`.

`serve` starts the Triton binary and needs no client. `explain` and `app` run the clients
(`cfxray.serving.cli`: tritonclient, gradio), imported only when they run, so building the CLI
imports neither.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from cfxray.errors import UserError
from cfxray.params import DEFAULT_PARAMS, section

SECTION = "serve"
DEFAULTS = {"model_repo": "model_repository", "host": "127.0.0.1", "http_port": 8000,
            "grpc_port": 8001, "metrics_port": 8002, "startup_timeout_s": 180,
            "url": "localhost:8000", "protocol": "http", "app_port": 7860,
            "max_upload_mb": 10.0}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Built-in defaults < params.yaml `serve` section < options given on the command line."""
    values = DEFAULTS | section(SECTION, args.params)
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise UserError(f"params section '{SECTION}' in {args.params} has unknown keys "
                        f"{unknown}; known: {sorted(DEFAULTS)}")
    values |= {k: v for k, v in vars(args).items() if v is not None}
    return argparse.Namespace(**values)


def _option(parser: argparse.ArgumentParser, flag: str, kind: type = str, **kw) -> None:
    key = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, type=kind, default=None,
                        help=f"{kw.pop('help', '')} (default {DEFAULTS[key]!r})".strip(), **kw)


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a model repository with a local Triton server (loopback)",
        description="Start the Triton Inference Server bundled with nvidia-pytriton on the "
                    "repository written by `cfxray export`, wait until every model is ready, "
                    "print the endpoints, and stop cleanly on Ctrl-C or SIGTERM. Defaults "
                    "come from the `serve` section of params.yaml.")
    _option(serve, "--model-repo", Path)
    _option(serve, "--host", help="address to bind; 0.0.0.0 exposes the server")
    _option(serve, "--http-port", int)
    _option(serve, "--grpc-port", int)
    _option(serve, "--metrics-port", int)
    _option(serve, "--startup-timeout-s", float, help="seconds to wait for the models")
    serve.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    serve.set_defaults(func=run_serve)

    explain = subparsers.add_parser(
        "explain", help="explain X-ray images through a running Triton server",
        description="Send images (any format and size the ingest step accepts; resized like "
                    "the training data) to the `explain` model and write, per image, the "
                    "counterfactual PNG, a difference heatmap over the original and a JSON of "
                    "the probabilities before and after.")
    explain.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _client_options(explain)
    explain.add_argument("--direction", choices=("auto", "p2n", "n2p"), default="auto",
                         help="auto: towards the class the classifier does not predict")
    explain.add_argument("--out", type=Path, default=Path("outputs/explain"))
    explain.set_defaults(func=run_explain)

    app = subparsers.add_parser(
        "app", help="web page (Gradio) for explanations from a running Triton server",
        description="Upload an X-ray; see the prediction, the counterfactual, the difference "
                    "heatmap and a blend slider.")
    _client_options(app)
    _option(app, "--host", help="address the page binds")
    _option(app, "--app-port", int, help="the page's port")
    _option(app, "--max-upload-mb", float, help="largest accepted upload")
    app.set_defaults(func=run_app)


def _client_options(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--url", help="Triton host:port (the HTTP port for http, gRPC for grpc)")
    _option(parser, "--protocol", choices=("http", "grpc"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to unwind into the server's cleanup."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_serve(args: argparse.Namespace) -> int:
    from cfxray.serving.triton import LocalTritonServer, Ports

    args = resolve(args)
    args.model_repo = Path(args.model_repo)
    if not args.model_repo.is_dir():
        raise UserError(f"model repository {args.model_repo} not found; run `cfxray export "
                        f"--out {args.model_repo}` first")
    server = LocalTritonServer(args.model_repo,
                               Ports(args.http_port, args.grpc_port, args.metrics_port),
                               host=args.host, startup_timeout_s=args.startup_timeout_s)
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, _raise_stop) for s in handled}
    code = 0
    try:
        print(f"starting Triton on {args.host} for {args.model_repo} ...", flush=True)
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

    args = resolve(args)
    return explain_command(args.images, args.url, args.protocol, args.direction, args.out)


def run_app(args: argparse.Namespace) -> int:
    from cfxray.serving.cli import app_command

    args = resolve(args)
    return app_command(args.url, args.protocol, args.host, args.app_port, args.max_upload_mb)
