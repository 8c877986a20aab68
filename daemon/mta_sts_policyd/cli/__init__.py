"""Command line: argparse subcommands, one module per command group.

The top layer: nothing imports `cli`.
"""
