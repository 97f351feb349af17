"""``baize-tui paths``: where config, data, cache and history live."""

from __future__ import annotations

import argparse
import json

from baize_tui.paths import HOME_ENV, get_paths
from baize_tui.termtext import echo


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``paths`` subcommand."""
    p = subparsers.add_parser(
        "paths",
        help="print where config, data, cache and history live",
        description=f"Print baize-tui's file locations. Set {HOME_ENV}=DIR to move them all.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("name", nargs="?", help="print only this location (e.g. history)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the locations."""
    locations = get_paths().as_dict()
    if args.name:
        if args.name not in locations:
            from baize_tui.errors import UserError

            raise UserError(f"unknown location {args.name!r}; choose from {', '.join(locations)}")
        echo(str(locations[args.name]))
    elif args.json:
        print(json.dumps({k: str(v) for k, v in locations.items()}, indent=2))
    else:
        width = max(map(len, locations))
        for key, value in locations.items():
            echo(f"{key:<{width}}  {value}")
    return 0
