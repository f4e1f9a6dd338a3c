"""``python -m bot``: the same as the ``approvals`` command."""

from bot.cli import main

main()
