"""``tftpdiag completion SHELL``: a completion script made by shtab from the real parser, so it offers
exactly the commands, options and choices that ``--help`` lists. shtab is imported only here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

__all__ = ["completion_script"]


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
                action.complete = shtab.DIRECTORY if action.dest == "dir" else shtab.FILE  # type: ignore[attr-defined]
    script = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"
