"""`cfxray rollout status | rollback --to N | latest`: which version every replica serves.

The state lives in the repository (`rollout.json`, cfxray.export.rollout); every Triton
replica polling the repository applies it within its poll interval (docs/SERVING.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cfxray.serving.commands import ServeSettings
from cfxray.settings import add_settings, resolve

# The params.yaml sections these commands read: the repository `cfxray serve` serves.
SECTIONS: dict[str, type] = {"serve": ServeSettings}


def register(subparsers: argparse._SubParsersAction) -> None:
    rollout = subparsers.add_parser(
        "rollout", help="show, pin (roll back) or release the version every replica serves",
        description="Every Triton replica serves the version the repository's configs name: "
                    "the newest one, or the one pinned by a rollback. A pin survives later "
                    "exports until `cfxray rollout latest` releases it.")
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="versions present, served, pinned, history")
    back = actions.add_parser("rollback", help="pin every model to version N")
    back.add_argument("--to", type=int, required=True, metavar="N")
    latest = actions.add_parser("latest", help="release the pin: serve the newest version")
    for parser in (status, back, latest):
        add_settings(parser, ServeSettings, "serve", only=("model_repo",),
                     help={"model_repo": "Triton model repository"})
        parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cfxray.export.rollout import set_served, status

    repo = Path(resolve(ServeSettings, args, "serve").model_repo)
    if args.action == "status":
        print(json.dumps(status(repo), indent=2))
        return 0
    pinned = args.to if args.action == "rollback" else None
    now = set_served(repo, pinned, args.action)
    what = f"pinned to version {now['served']}" if pinned is not None else \
        f"serving the newest version, {now['served']}"
    print(f"{repo}: {what}; every replica follows within its repository poll interval")
    return 0
