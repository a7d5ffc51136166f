"""Client architectures (option 93, RFC 4578 and IANA's registry) and what a boot loader is built for.

A device says what it is in option 93; the server should answer with a loader built for it. Offering a
BIOS loader to UEFI firmware or the reverse (or an x64 one to an ARM board) is among the commonest
reasons a device will not boot, and it shows in the loader itself: a UEFI loader is a PE image ("MZ",
then "PE\\0\\0" with an EFI subsystem and the CPU it runs on), a BIOS one is a raw PXE program
(pxelinux.0, undionly.kpxe, wdsnbp.com), usually recognisable by its name.
"""

from __future__ import annotations

import struct

from tftpdiag.records import record

__all__ = ["Arch", "ARCHES", "by_name", "by_code", "Loader", "loader_from_name", "loader_from_bytes",
           "HEAD_BYTES", "NOT_UEFI"]

HEAD_BYTES = 4096  # the first bytes of a loader needed to read its PE header
NOT_UEFI = "not-uefi"  # Loader.firmware of a file that is no PE image: UEFI cannot run it, BIOS perhaps can


@record
class Arch:
    """A client architecture a PXE check can pose as (DHCP option 93)."""

    name: str  # what --arch takes
    code: int  # option 93
    title: str
    firmware: str  # "bios" or "uefi"
    machines: tuple[int, ...] = ()  # PE machine types a UEFI loader for it may have
    http: bool = False  # UEFI HTTP boot: option 60 says HTTPClient, the file is a URL

    @property
    def vendor_class(self) -> str:
        """Option 60 as PXE firmware sends it: ``PXEClient:Arch:xxxxx:UNDI:yyyzzz`` (UNDI 3.16 for UEFI,
        2.1 for BIOS, as real firmware reports)."""
        undi = "003016" if self.firmware == "uefi" else "002001"
        return f"{'HTTPClient' if self.http else 'PXEClient'}:Arch:{self.code:05d}:UNDI:{undi}"

    @property
    def client(self) -> str:
        """The PXE client it makes a device, with its article: "a bios PXE client", "an efi-x64 PXE client"."""
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name} PXE client"

    @property
    def undi(self) -> bytes:
        """Option 94 (client network interface identifier): type 1 (UNDI), major, minor."""
        return bytes((1, 3, 16)) if self.firmware == "uefi" else bytes((1, 2, 1))


_X86, _X64, _ARM32, _ARM64, _RISCV64 = (0x14C,), (0x8664,), (0x1C2, 0x1C4), (0xAA64,), (0x5064,)

ARCHES: tuple[Arch, ...] = (
    Arch("bios", 0, "x86 BIOS", "bios"),
    Arch("efi-ia32", 6, "x86 UEFI (32-bit)", "uefi", _X86),
    Arch("efi-x64", 7, "x64 UEFI (code 7, RFC 4578's 'EFI BC': what x64 firmware sends)", "uefi", _X64),
    Arch("efi-x86-64", 9, "x64 UEFI (code 9, RFC 4578's 'EFI x86-64': some firmware)", "uefi", _X64),
    Arch("efi-arm32", 10, "ARM 32-bit UEFI", "uefi", _ARM32),
    Arch("efi-arm64", 11, "ARM 64-bit UEFI", "uefi", _ARM64),
    Arch("efi-ia32-http", 15, "x86 UEFI HTTP boot", "uefi", _X86, http=True),
    Arch("efi-x64-http", 16, "x64 UEFI HTTP boot", "uefi", _X64, http=True),
    Arch("efi-arm32-http", 18, "ARM 32-bit UEFI HTTP boot", "uefi", _ARM32, http=True),
    Arch("efi-arm64-http", 19, "ARM 64-bit UEFI HTTP boot", "uefi", _ARM64, http=True),
    Arch("efi-riscv64", 27, "RISC-V 64-bit UEFI", "uefi", _RISCV64),
)

_BY_NAME = {a.name: a for a in ARCHES}
_BY_CODE = {a.code: a for a in ARCHES}
_MACHINE_NAMES = {0x14C: "x86 (32-bit)", 0x8664: "x64", 0x1C2: "ARM 32-bit", 0x1C4: "ARM 32-bit",
                  0xAA64: "ARM64", 0x5064: "RISC-V 64-bit", 0x200: "Itanium"}


def by_name(name: str) -> Arch | None:
    return _BY_NAME.get(name.strip().lower())


def by_code(code: int) -> Arch | None:
    return _BY_CODE.get(code)


@record
class Loader:
    """What a boot file is built for, and how that was told (its name or its first bytes)."""

    firmware: str | None  # "bios", "uefi", NOT_UEFI (no PE image: not for UEFI), or None when it cannot be told
    machine: int | None = None  # the PE machine type, for a UEFI image
    reason: str = ""

    @property
    def cpu(self) -> str | None:
        return None if self.machine is None else _MACHINE_NAMES.get(self.machine, f"machine 0x{self.machine:04x}")


# Names of loaders whose target is known; matched on the last path component, case-insensitively.
_UEFI_SUFFIXES = (".efi",)
_BIOS_SUFFIXES = (".kpxe", ".kkpxe", ".kkkpxe", ".pxe", ".0", ".com", ".n12", ".lkrn")
_BIOS_NAMES = ("pxelinux", "lpxelinux", "gpxelinux", "undionly", "wdsnbp", "pxeboot", "startrom", "ipxe.pxe")
_UEFI_NAMES = ("bootx64", "bootia32", "bootaa64", "bootarm", "grubx64", "grubia32", "grubaa64", "shimx64",
               "shimaa64", "snponly", "snp.efi", "syslinux.efi", "wdsmgfw", "bootmgfw")


def loader_from_name(name: str) -> Loader:
    """BIOS or UEFI from a boot file's name alone (None when it says neither)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if base.endswith(_UEFI_SUFFIXES) or any(base.startswith(n) for n in _UEFI_NAMES):
        return Loader("uefi", reason=f"its name ends in {base[base.rfind('.'):] or base} or names a UEFI loader")
    if base.endswith(_BIOS_SUFFIXES) or any(base.startswith(n) for n in _BIOS_NAMES):
        return Loader("bios", reason="its name is that of a BIOS PXE loader")
    return Loader(None)


_EFI_SUBSYSTEMS = {10: "EFI application", 11: "EFI boot service driver", 12: "EFI runtime driver"}


def loader_from_bytes(head: bytes) -> Loader:
    """BIOS or UEFI from a boot file's first bytes: a PE image with an EFI subsystem is UEFI; anything
    that is not a PE image cannot run under UEFI (NOT_UEFI), which says nothing of whether it is a BIOS
    program: any file is not a PE image; a PE image for Windows (not EFI) is neither."""
    if head[:2] != b"MZ":
        return Loader(NOT_UEFI, reason="it does not start with 'MZ', so it is not a PE image UEFI could run")
    if len(head) < 0x40:
        return Loader(None, reason="it starts with 'MZ' but is too short to hold a PE header")
    (pe_offset,) = struct.unpack_from("<I", head, 0x3C)
    # Signature (4), COFF header (20), then the optional header whose subsystem is at offset 68.
    if pe_offset + 24 + 70 > len(head) or head[pe_offset:pe_offset + 4] != b"PE\0\0":
        return Loader(None, reason="it starts with 'MZ' but has no PE header in its first bytes (a DOS program?)")
    (machine,) = struct.unpack_from("<H", head, pe_offset + 4)
    (subsystem,) = struct.unpack_from("<H", head, pe_offset + 24 + 68)
    if subsystem in _EFI_SUBSYSTEMS:
        cpu = _MACHINE_NAMES.get(machine, f"machine 0x{machine:04x}")
        return Loader("uefi", machine, f"it is a PE image, an {_EFI_SUBSYSTEMS[subsystem]} for {cpu}")
    return Loader(None, machine, f"it is a PE image with subsystem {subsystem}, not an EFI one")
