"""Command line: the values and their parsers (values), the parser of every command (parser), from
arguments to engine settings (requests), and the entry point (main). Imports go one way: the commands
import from here; only main imports the commands, and only when one runs."""
