"""Command-line front ends: the ``pycni`` command."""

from ._app import app, interpreter, main, plugin_script

__all__ = ["app", "interpreter", "main", "plugin_script"]
