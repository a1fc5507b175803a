"""The ``corral`` command line (Typer + rich); the entry point is :func:`corral.cli.main.main`.

This package must not contain controller or API logic: it parses, calls and prints.
"""
