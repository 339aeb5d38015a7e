"""``python -m pycni.cli``: the same as the ``pycni`` command."""

from . import main

main()
