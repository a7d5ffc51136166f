"""The wheel and the sdist as a user and a packager get them: built with `python -m build` as a release
would be, then opened and checked. The wheel holds the package and nothing else (plus the man page as
data), with full metadata; the sdist holds everything its own tests need. The wheel is also installed
into a fresh virtual environment to see the command and the man page land where they should."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tftpdiag import __version__

ROOT = Path(__file__).resolve().parents[2]
NAME = f"tftpdiag-{__version__}"
# What the tests, the README's screenshot check and the man page check read besides the package.
SDIST_TREES = ("tftpdiag", "tests", "scripts", "screenshots", "man", "benchmarks", ".ci", "contrib")
SKIPPED = {"__pycache__", ".pytest_cache", ".hypothesis"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the build package is in the [test] extra")
    out = tmp_path_factory.mktemp("dist")
    # From a clean copy: setuptools also packs whatever a SOURCES.txt left by an earlier build listed,
    # which would hide a file that MANIFEST.in no longer names.
    source = tmp_path_factory.mktemp("source") / "tftpdiag"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "dist", ".peers",
                                                                *SKIPPED))
    # The build runs in an isolated environment with the build-system requirements (setuptools>=77 for
    # the SPDX licence), as pip and a release would run it.
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def files_under(top: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED and not d.endswith(".egg-info")]
        found |= {str((Path(dirpath) / f).relative_to(ROOT)) for f in filenames if not f.endswith(".pyc")}
    return found


def test_wheel_holds_the_package_its_metadata_and_the_man_page(dist: Path) -> None:
    with zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
        metadata = email.parser.Parser().parsestr(wheel.read(f"{NAME}.dist-info/METADATA").decode())
        page = wheel.read(f"{NAME}.data/data/share/man/man1/tftpdiag.1").decode()
    extra = {n for n in names if not n.startswith(("tftpdiag/", f"{NAME}.dist-info/", f"{NAME}.data/"))}
    assert extra == set(), "only the package belongs in the wheel"
    assert {n for n in names if n.startswith(f"{NAME}.data/")} == {f"{NAME}.data/data/share/man/man1/tftpdiag.1"}
    assert "tftpdiag/py.typed" in names and f"{NAME}.dist-info/licenses/LICENSE" in names
    assert not any("_bench" in n or n.startswith("tftpdiag/tests") for n in names)
    assert page == (ROOT / "man" / "tftpdiag.1").read_text()
    # Every module of the package is in it.
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "tftpdiag").rglob("*.py")} <= names

    assert metadata["License-Expression"] == "MIT" and metadata["Requires-Python"] == ">=3.10"
    classifiers = metadata.get_all("Classifier")
    for wanted in ("Typing :: Typed", "Environment :: Console", "Topic :: System :: Networking",
                   "Programming Language :: Python :: 3.10", "Operating System :: POSIX :: Linux"):
        assert wanted in classifiers, wanted
    assert not any(c.startswith("License ::") for c in classifiers), "the SPDX expression replaces them"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Source", "Issues", "Documentation"}
    assert all(u.startswith("https://") for u in urls.values())
    assert "tftp" in metadata["Keywords"].split(",")
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("shtab") for r in requires) and any(r.startswith("textual") for r in requires)


def test_sdist_holds_everything_its_tests_need(dist: Path) -> None:
    with tarfile.open(dist / f"{NAME}.tar.gz") as sdist:
        names = {n.removeprefix(f"{NAME}/") for n in sdist.getnames()}
    for top in SDIST_TREES:
        missing = files_under(ROOT / top) - names
        assert not missing, f"left out of the sdist: {sorted(missing)[:10]}"
    for helper in ("tests/support/peers.py", "tests/support/interop.py", "tests/support/simnet.py",
                   "tests/support/tui_samples.py", "tests/__init__.py", "scripts/manpage.py", "man/tftpdiag.1",
                   "LICENSE", "README.md", "pyproject.toml", "MANIFEST.in"):
        assert helper in names, helper
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)


def test_wheel_installs_the_command_and_the_man_page(dist: Path, tmp_path: Path) -> None:
    """Into a fresh venv that borrows this environment's dependencies (nothing is downloaded): its own
    copy of tftpdiag runs, and man finds the page beside the venv's bin/."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # Away from the checkout (its tftpdiag.egg-info would pass for an installed tftpdiag): pip must
    # see an empty venv and install the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                          "--no-deps", "--no-index", "--force-reinstall", "-q", str(dist / f"{NAME}-py3-none-any.whl")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr
    # The dependencies come from this environment's site-packages, named by a plain .pth line: the
    # .pth files in it (such as an editable install of tftpdiag itself) are not run, so the only
    # tftpdiag the venv can import is the wheel's.
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "borrowed.pth").write_text("\n".join(p for p in sys.path if p.endswith("-packages")) + "\n")
    where = subprocess.run([venv / "bin" / "python", "-c", "import tftpdiag; print(tftpdiag.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    version = subprocess.run([venv / "bin" / "tftpdiag", "--version"], capture_output=True, text=True, timeout=60,
                             env=env, cwd=tmp_path)
    assert version.stdout.strip() == f"tftpdiag {__version__}"
    page = venv / "share" / "man" / "man1" / "tftpdiag.1"
    assert page.read_text() == (ROOT / "man" / "tftpdiag.1").read_text()
    completion = subprocess.run([venv / "bin" / "tftpdiag", "completion", "bash"], capture_output=True, text=True,
                                timeout=60, env=env, cwd=tmp_path)
    assert completion.returncode == 0 and "_shtab_tftpdiag" in completion.stdout


def test_readme_pictures_show_on_a_package_index() -> None:
    """A package index shows the README without the repository beside it: every picture is linked by
    an absolute URL into the repository named as Source in pyproject.toml, at a file that exists."""
    source = re.search(r'^Source = "https://github\.com/([\w.-]+/[\w.-]+)"$', (ROOT / "pyproject.toml").read_text(),
                       re.MULTILINE)
    assert source, "pyproject.toml names no GitHub Source URL"
    base = f"https://raw.githubusercontent.com/{source.group(1)}/main/"
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(links) >= 6
    for link in links:
        assert link.startswith(base), link
        assert (ROOT / link.removeprefix(base)).is_file(), link
