"""``python -m demo``: see :mod:`demo.cli`."""

from demo.cli import main

main()
