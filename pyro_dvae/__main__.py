"""``python -m pyro_dvae`` is the ``pyro-dvae`` command."""

from .cli import main

main()
