"""Command-line front ends: the ``pycni`` command."""

from ._app import app, main

__all__ = ["app", "main"]
