"""`tftpdiag completion SHELL` and the man page: both made from the real parser, so they offer exactly
what --help lists. The completion scripts are loaded into the real shells and asked to complete; the
man page must be what scripts/manpage.py makes of today's parser, and render without roff warnings."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.peers import require
from tftpdiag.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30


def script(shell: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "completion", shell], capture_output=True,
                            text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def commands_and_options() -> dict[str, list[str]]:
    """Every command and the long options it takes, from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [s for a in p._actions for s in a.option_strings if s.startswith("--")]
            for name, p in sub.choices.items()}


def bash_complete(path: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for ``line`` with the script loaded: the completion function called as bash's
    programmable completion calls it on TAB."""
    code = (f'source {path}; COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; read -ra COMP_WORDS <<< "$COMP_LINE"; '
            '[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
            'complete -p tftpdiag >/dev/null && _shtab_tftpdiag tftpdiag; printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completes_commands_options_choices_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "tftpdiag.bash"
    path.write_text(script("bash"))
    assert set(commands_and_options()) <= set(bash_complete(path, "tftpdiag "))
    assert bash_complete(path, "tftpdiag pr") == ["probe"]
    assert bash_complete(path, "tftpdiag probe --blk") == ["--blksize"]
    assert set(bash_complete(path, "tftpdiag probe --mode ")) == {"octet", "netascii"}
    assert set(bash_complete(path, "tftpdiag completion ")) == {"bash", "zsh", "fish"}
    # Paths: trace PATH offers files, serve DIR only directories.
    (tmp_path / "cap.pcap").write_bytes(b"")
    (tmp_path / "firmware").mkdir()
    assert "cap.pcap" in bash_complete(path, "tftpdiag trace ", cwd=tmp_path)
    served = bash_complete(path, "tftpdiag serve ", cwd=tmp_path)
    assert "firmware" in served and "cap.pcap" not in served


def test_fish_completes_every_command_and_option(tmp_path: Path) -> None:
    fish = require("fish")
    path = tmp_path / "tftpdiag.fish"
    path.write_text(script("fish"))

    def complete(line: str) -> list[str]:
        result = subprocess.run([fish, "--no-config", "-c", f"source {path}; complete -C '{line}'"],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0 and not result.stderr, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    wanted = commands_and_options()
    assert set(wanted) <= set(complete("tftpdiag "))
    for name, options in wanted.items():
        assert set(options) <= set(complete(f"tftpdiag {name} --")), name
    assert set(complete("tftpdiag probe --mode ")) == {"octet", "netascii"}


def test_zsh_script_is_valid_and_names_every_option(tmp_path: Path) -> None:
    zsh = require("zsh")
    text = script("zsh")
    path = tmp_path / "_tftpdiag"
    path.write_text(text)
    result = subprocess.run([zsh, "-n", str(path)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert text.startswith("#compdef tftpdiag")
    for name, options in commands_and_options().items():
        assert f"_shtab_tftpdiag_{name}_options" in text
        for option in options:
            # "--port[...]", "*--bind[...]" (repeatable) or {-o,--output}"[...]": the option's spec
            assert re.search(rf'(?:"\*?|[{{,]){re.escape(option)}[\[}},]', text), (name, option)


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "completion", "tcsh"], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 2 and "invalid choice" in result.stderr and not result.stdout


def test_shtab_is_loaded_only_by_the_completion_command() -> None:
    code = ("import sys, tftpdiag.cli.parser, tftpdiag.commands, tftpdiag.headless; "
            "tftpdiag.cli.parser.build_parser().parse_args(['probe', 'h', 'f']); print('shtab' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stdout.strip() == "False", result.stderr


# -- the man page ----------------------------------------------------------------------------------

def _manpage_script():  # scripts/ is not a package: load the generator by its path
    spec = importlib.util.spec_from_file_location("manpage", ROOT / "scripts" / "manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_page_is_what_the_parser_makes_today() -> None:
    pytest.importorskip("argparse_manpage", reason="argparse-manpage is in the [test] extra")
    manpage = _manpage_script()
    fresh, expected = manpage.up_to_date()
    assert fresh, "man/tftpdiag.1 does not match the parser: run python scripts/manpage.py"
    page = manpage.PAGE.read_text()
    for name, options in commands_and_options().items():
        assert f"tftpdiag {name}" in page
        for option in options:
            assert option.replace("-", "\\-") in page, (name, option)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXAMPLES", "EXIT STATUS", "SEE ALSO"):
        assert f".SH {section}\n" in page, section


def test_man_page_renders_without_warnings() -> None:
    groff = require("groff")
    result = subprocess.run([groff, "-man", "-ww", "-Tutf8", str(ROOT / "man" / "tftpdiag.1")], capture_output=True,
                            timeout=TIMEOUT, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode(errors="replace")
    text = result.stdout.decode()
    assert "tftpdiag completion" in text and "--impair" in text.replace("\u2010", "-")
