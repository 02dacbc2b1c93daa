"""Write docs/commands.md: the --help of every pyro-dvae command (generated, not typed).

python scripts/command_help.py > docs/commands.md
"""

from pyro_dvae.cli.help import commands_markdown

print(commands_markdown(), end="")
