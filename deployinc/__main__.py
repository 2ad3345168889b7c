"""``python -m deployinc``."""

from .cli.main import main

main()
