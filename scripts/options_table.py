"""Print the configuration fields as the Markdown table of docs/cli.md (generated, not typed).

python scripts/options_table.py
"""

from pyro_dvae.cli.options import markdown_table

print(markdown_table(), end="")
