"""Write man/tftpdiag.1, the manual page, from the parser that --help prints (argparse-manpage).

    python scripts/manpage.py            # rewrite man/tftpdiag.1 after changing a command or option
    python scripts/manpage.py --check    # exit 1 if man/tftpdiag.1 is not what the parser makes today

The page is checked in, not made at build time, so that building the package needs nothing but
setuptools; tests/test_manpage.py fails when it falls behind the parser. Its date is the day it was
last changed (kept when nothing else changed), so a rebuild on another day gives the same file.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argparse_manpage.manpage import Manpage  # noqa: E402 - after the path set-up above

import tftpdiag.cli.parser  # noqa: E402
import tftpdiag.cli.values  # noqa: E402
from tftpdiag import __version__  # noqa: E402

PAGE = ROOT / "man" / "tftpdiag.1"
_DATE = re.compile(r'^\.TH \S+ "\d+" "([^"]*)"', re.MULTILINE)

DESCRIPTION = "see why a TFTP transfer fails, packet by packet"


EXIT_STATUS = """\
.TP
.B 0
the transfer completed (and matched \\-\\-expect\\-sha256); the server stopped cleanly; the trace was read
.TP
.B 1
the transfer failed (an ERROR from the peer, a timeout, a checksum mismatch)
.TP
.B 2
a usage or set\\-up error (a bad option, an unreadable directory, a port in use, a file that is not a trace)
.TP
.B 130
interrupted by Ctrl\\-C (a probe or put reports what it did so far first)
.TP
.B 143, 129
stopped by SIGTERM or SIGHUP (a closed terminal), handled as Ctrl\\-C is
.TP
.B 141
whoever read the output went away (as with \\-v | head)
"""

SEE_ALSO = ".BR tcpdump (1),\n.BR tshark (1),\n.BR in.tftpd (8),\n.BR tftp (1)\n"


def _roff(text: str) -> str:
    """Plain text as roff: backslashes and dashes escaped, and no line may start with a control
    character (a . or ')."""
    lines = []
    for raw in text.splitlines():
        escaped = raw.replace("\\", "\\e").replace("-", "\\-")
        lines.append("\\&" + escaped if escaped.startswith((".", "'")) else escaped)
    return "\n".join(lines)


def _examples(parser: argparse.ArgumentParser) -> str:
    """Each command's examples, as its --help ends with them, in a no-fill block."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub.epilog:
                    out += [f".SS {name}", ".nf", _roff(sub.epilog.strip()), ".fi"]
    return "\n".join(out) + "\n"


def render(date: str) -> str:
    """The page's roff text for ``date`` (YYYY-MM-DD)."""
    # --help wraps to the terminal; the page must not depend on the terminal it was made in.
    tftpdiag.cli.values.terminal_width = lambda: 100
    parser = tftpdiag.cli.parser.build_parser()
    data = {"date": date, "project_name": "tftpdiag", "version": __version__, "manual_section": "1",
            "manual_title": "tftpdiag manual", "description": DESCRIPTION,
            "url": "https://github.com/tftpdiag/tftpdiag"}
    page = Manpage(parser, _data=data, format="single-commands-section")
    page.add_section("examples", ">", _examples(parser))
    page.add_section("exit status", ">", EXIT_STATUS)
    page.add_section("see also", ">", SEE_ALSO)
    # argparse calls the commands "positional arguments"; a manual calls them commands.
    text = str(page).replace(".SH\nPOSITIONAL ARGUMENTS\n", ".SH COMMANDS\n", 1)
    return text if text.endswith("\n") else text + "\n"


def current() -> str | None:
    return PAGE.read_text() if PAGE.exists() else None


def up_to_date() -> tuple[bool, str]:
    """Whether the page on disk matches the parser (its own date kept), and the page as it should be."""
    old = current()
    match = _DATE.search(old or "")
    today = datetime.date.today().isoformat()
    if old is not None and match and render(match.group(1).replace("\\-", "-")) == old:
        return True, old
    return False, render(today)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the page is stale")
    args = parser.parse_args()
    fresh, text = up_to_date()
    if args.check:
        if not fresh:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/manpage.py", file=sys.stderr)
        return 0 if fresh else 1
    if not fresh:
        PAGE.write_text(text)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
