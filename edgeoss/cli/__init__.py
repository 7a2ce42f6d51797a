"""The `edgeoss` command: main.py parses arguments and dispatches, one module a command.
Argument parsing and printing only; the work is in the library. Nothing imports cli."""
