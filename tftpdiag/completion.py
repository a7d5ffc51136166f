"""``tftpdiag completion SHELL``: a completion script made by shtab from the real parser, so it offers
exactly the commands, options and choices that ``--help`` lists. shtab is imported only here."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from tftpdiag.cli.listing import COMMAND_HELP

__all__ = ["SHELLS", "add_completion_parser", "completion_script"]

SHELLS = ("bash", "zsh", "fish")

COMPLETION_EXAMPLES = """examples:
  tftpdiag completion bash > ~/.local/share/bash-completion/completions/tftpdiag
  tftpdiag completion zsh > ~/.zfunc/_tftpdiag      # with fpath+=~/.zfunc before compinit in ~/.zshrc
  tftpdiag completion fish > ~/.config/fish/completions/tftpdiag.fish
  source <(tftpdiag completion bash)                 # this shell only
"""


def add_completion_parser(sub: argparse._SubParsersAction, formatter: type[argparse.HelpFormatter]) -> None:
    completion = sub.add_parser("completion", help=COMMAND_HELP["completion"],
                                description="Print a script that completes tftpdiag's commands, options and "
                                            "file names in SHELL, made from the same parser as --help.",
                                epilog=COMPLETION_EXAMPLES, formatter_class=formatter)
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help=f"one of {', '.join(SHELLS)}")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser: each once
                yield from _parsers(sub)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for ``shell`` (bash, zsh or fish). Arguments that take a path complete file names
    (a directory's, for ``serve DIR``)."""
    import shtab

    for p in _parsers(parser):
        for action in p._actions:
            if action.type is Path:
                # shtab's API: it reads a `complete` attribute it asks callers to set on argparse's Action,
                # which argparse's stubs do not declare.
                action.complete = shtab.DIRECTORY if action.dest == "dir" else shtab.FILE  # type: ignore[attr-defined]
    script = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"
