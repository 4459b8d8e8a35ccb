"""``python -m udcbench``: the command line."""

from udcbench.cli import main

main()
