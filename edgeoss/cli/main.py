"""`edgeoss` command line: builds the parser from one module a command and runs the chosen one;
a user's error (edgeoss.errors) is printed on one line, without a traceback."""

from __future__ import annotations

import argparse
import sys

from . import bench, chat, convert, demo, generate, info, list_models, plan, pull, rm, serve, verify

COMMANDS = (pull, list_models, rm, convert, info, verify, generate, chat, serve, bench, plan, demo)  # in the order `edgeoss -h` lists them


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeoss", description="Run OpenAI's gpt-oss models offline on a CPU.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import USER_ERRORS
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"edgeoss: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
