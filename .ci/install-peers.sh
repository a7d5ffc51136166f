#!/usr/bin/env bash
# Install the real TFTP peer programs used by the interop tests (tests/peers.py).
# Run as root on a bare Debian 12 machine. Idempotent: safe to run again.
#
#   - Debian packages: tftpd-hpa, tftp-hpa, atftp, dnsmasq-base, curl, busybox, postgresql
#     (the history tests start their own server with its initdb and pg_ctl),
#     tshark, tcpdump, tmux, procps, iproute2, systemd (systemd-socket-activate hands serve its
#     socket), util-linux (setpriv, unshare); zsh, fish and man-db for the tests of
#     `tftpdiag completion` and of the man page
#   - atftpd (conflicts with tftpd-hpa as a package): unpacked with dpkg -x into
#     /opt/tftpdiag-peers/atftpd, binary at /opt/tftpdiag-peers/atftpd/usr/sbin/atftpd
#   - no system tftpd is left running on port 69 (the tests start their own).
set -euo pipefail

PEERS_DIR=/opt/tftpdiag-peers
ATFTPD_DIR="$PEERS_DIR/atftpd"
ATFTPD_BIN="$ATFTPD_DIR/usr/sbin/atftpd"

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: must run as root" >&2
    exit 1
fi

# tshark asks whether non-root users may capture; answer it up front.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections

# Keep maintainer scripts from starting daemons (tftpd-hpa's postinst runs
# `invoke-rc.d tftpd-hpa start`, which would grab UDP 69). Only install our own
# policy-rc.d when the machine has none, and remove it again afterwards.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    OWN_POLICY=1
fi
TMPDIR_DL="$(mktemp -d)"
cleanup() {
    if [ "$OWN_POLICY" = 1 ]; then rm -f "$POLICY"; fi
    rm -rf "$TMPDIR_DL"
}
trap cleanup EXIT

# Wait for the dpkg lock instead of failing if another apt run holds it.
APT=(apt-get -o DPkg::Lock::Timeout=300)
"${APT[@]}" update
"${APT[@]}" install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    tftpd-hpa tftp-hpa atftp dnsmasq-base curl busybox tshark tcpdump \
    tmux procps iproute2 systemd util-linux \
    postgresql \
    zsh fish man-db \
    libwrap0 libpcre2-8-0   # runtime libraries of the unpacked atftpd

# Make sure no system tftpd-hpa runs or comes back at boot. With systemd the
# unit is stopped and disabled; without it (containers) the SysV link is
# disabled. Not `/etc/init.d/tftpd-hpa stop`: it kills EVERY process named
# in.tftpd, including test servers. Instead kill only an in.tftpd that holds
# UDP port 69 (which is what the init script starts, from /etc/default/tftpd-hpa).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now tftpd-hpa.service >/dev/null 2>&1 || true
else
    update-rc.d tftpd-hpa disable >/dev/null 2>&1 || true
fi
stop_tftpd_on_port() {  # $1 = UDP port
    local pids
    pids="$(ss -Hulnp "sport = :$1" 2>/dev/null | grep -o '"in\.tftpd",pid=[0-9]*' | grep -o '[0-9]*$' | sort -u || true)"
    [ -z "$pids" ] && return 0
    echo "install-peers.sh: stopping in.tftpd on UDP $1: $pids"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
        ss -Hulnp "sport = :$1" 2>/dev/null | grep -q '"in\.tftpd"' || return 0
        sleep 0.1
    done
    echo "install-peers.sh: in.tftpd still holds UDP $1" >&2
    return 1
}
stop_tftpd_on_port 69

# atftpd: unpack (not install) the package into a private folder.
WANT_VER="$(apt-cache policy atftpd | awk '/Candidate:/ {print $2}')"
HAVE_VER="$(cat "$ATFTPD_DIR/VERSION" 2>/dev/null || true)"
if [ ! -x "$ATFTPD_BIN" ] || [ "$HAVE_VER" != "$WANT_VER" ]; then
    chown _apt "$TMPDIR_DL" 2>/dev/null || true   # lets apt download unsandboxed-warning free
    (cd "$TMPDIR_DL" && apt-get download atftpd)
    rm -rf "$ATFTPD_DIR"
    mkdir -p "$ATFTPD_DIR"
    dpkg -x "$TMPDIR_DL"/atftpd_*.deb "$ATFTPD_DIR"
    echo "$WANT_VER" >"$ATFTPD_DIR/VERSION"
fi

# Smoke checks: every binary the tests use must exist and start.
# (sed reads all input, so no SIGPIPE under pipefail; busybox with no applet exits 1)
first_line() { { "$@" 2>&1 || true; } | { grep -v '^Running as user' || true; } | sed -n 1p; }
for cmd in "$ATFTPD_BIN --version" "in.tftpd -V" "tftp -V" "atftp --version" \
           "dnsmasq --version" "curl --version" "busybox" "tcpdump --version" \
           "tshark --version" "systemd-socket-activate --version" "setpriv --version"; do
    bin="${cmd%% *}"
    command -v "$bin" >/dev/null || { echo "install-peers.sh: missing $bin" >&2; exit 1; }
    # shellcheck disable=SC2086
    first_line $cmd
done
echo "install-peers.sh: done"
