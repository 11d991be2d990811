"""`python -m mailstack_cli`: the `mailstack` command."""

from mailstack_cli.main import main

main()
