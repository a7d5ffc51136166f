"""What each command does once its arguments are parsed: set up the engine, then hand the event
stream to the TUI or to the headless printer."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tftpdiag.cli.requests import (
    check_output_paths,
    check_request,
    client_target,
    client_timing,
    download_limit,
    interactive,
    requested_options,
    server_policy,
    verbosity,
)
from tftpdiag.cli.values import EXIT_FAILED, EXIT_OK, STDOUT, UsageError
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer, TransferSetupError
from tftpdiag.engine.spin import BUSY_POLL
from tftpdiag.fmt import json_line, line
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing

if TYPE_CHECKING:  # the server engine is imported only by the commands that serve
    from tftpdiag.engine.server import ServerConfig, TftpServer

__all__ = ["run_client", "run_serve", "run_demo", "run_trace", "run_pxe", "make_sample_image"]


def _check_sha(expected: str | None, output: Path | None = None) -> Callable[[ClientOutcome], dict[str, Any]]:
    """The summary's SHA-256 fields. The engine has already refused to keep a download that does not
    match (``output``, if given, was not written)."""
    def extra(outcome: ClientOutcome) -> dict[str, Any]:
        if expected is None:
            return {"expected_sha256": None, "sha256_match": None}
        match = outcome.ok and outcome.sha256 == expected
        fields: dict[str, Any] = {"expected_sha256": expected, "sha256_match": match}
        if outcome.ok and not match:
            fields["ok"] = False
            kept = f"; nothing was written to {output}" if output is not None else ""
            fields["failure"] = f"SHA-256 mismatch: got {outcome.sha256}, expected {expected}{kept}"
        return fields
    return extra


@contextlib.contextmanager
def _trace(bus: EventBus, path: Path | None, skip: Callable[[int], bool] | None = None,
           snaplen: int | None = None) -> Iterator[None]:
    if path is None:
        yield
        return
    from tftpdiag.trace.recorder import TraceRecorder, TraceSetupError

    try:
        recorder = TraceRecorder.open(path, bus, snaplen=snaplen, skip=skip)
    except TraceSetupError as exc:
        raise UsageError(str(exc)) from None
    try:
        yield
    finally:
        recorder.close()


def _seeded(args: argparse.Namespace) -> None:
    """Fix the impairment's random seed now, so it can be shown and the run repeated exactly."""
    if args.impair is not None:
        if args.impair.seed is None:
            import random  # here: only a run with --impair needs it at start

            args.impair = dataclasses.replace(args.impair, seed=random.randrange(1 << 31))
        if not interactive(args) and verbosity(args) >= 0:
            print(f"tftpdiag: impairing traffic with {args.impair} (the same --impair repeats this run)",
                  file=sys.stderr, flush=True)


def impair_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``impair`` field of the JSON objects: what --impair did to this run and the seed that repeats
    it (chosen by :func:`_seeded` when the user gave none), or null without --impair."""
    spec = getattr(args, "impair", None)
    return {"impair": None if spec is None else {"spec": str(spec), "seed": spec.seed}}


def _impair_hook(args: argparse.Namespace) -> Callable[..., dict[str, Any]] | None:
    """For serve: the ``impair`` field joins every session's JSON object (printed, logged, kept)."""
    if getattr(args, "impair", None) is None:
        return None
    fields = impair_fields(args)
    return lambda record, findings: fields


def _client_request(args: argparse.Namespace, upload: bool) -> ClientRequest:
    target = client_target(args, upload)
    output = getattr(args, "output", None)
    to_stdout = output == STDOUT
    if to_stdout:
        output = None
    options, mode = requested_options(args), target.mode or "octet"
    check_output_paths(output, args.trace)
    check_request(target.filename, mode, options, upload=upload, upload_size=_upload_size(args) if upload else None)
    return ClientRequest(
        host=target.host, filename=target.filename, port=target.port, upload=upload, mode=mode, options=options,
        timing=client_timing(args), family=args.family, output=output, stdout=to_stdout,
        source=args.local if upload else None, deadline=args.deadline,
        impair=args.impair, offload=args.offload, max_size=None if upload else download_limit(args),
        expected_sha256=None if upload else getattr(args, "expect_sha256", None), busy_poll=_busy_poll(args))


def _upload_size(args: argparse.Namespace) -> int:
    """The tsize a put's WRQ will offer, as far as it matters to the request's length. In netascii the
    engine counts the converted size, at most twice the file's: the bound is taken rather than reading
    the whole file twice. A file that cannot be read is said by the transfer's set-up."""
    try:
        size = args.local.stat().st_size
    except OSError:
        return 0
    return 2 * size if (args.mode or "octet") == "netascii" else size


def _busy_poll(args: argparse.Namespace) -> float:
    """The --busy-poll the user gave, else the engine's default for this machine."""
    value = getattr(args, "busy_poll", None)
    return BUSY_POLL if value is None else float(value)


def run_client(args: argparse.Namespace, *, upload: bool) -> int:
    if not upload and args.sweep:
        if verbosity(args) > 0:
            raise UsageError("-v shows the packets of one transfer; with --sweep, use --trace PATH to keep them")
        if args.output is not None or args.expect_sha256 is not None:
            # Each probe of a sweep stops after 2 MiB: there is no whole file to keep or to check.
            raise UsageError("-o/--expect-sha256 do not apply to --sweep: its probes stop after 2 MiB and keep "
                             "nothing")
        return run_sweep_command(args)
    if getattr(args, "output", None) == STDOUT:
        # stdout carries the file alone: a terminal would show it as garbage, --json would be mixed into it.
        if args.json:
            raise UsageError("-o - puts the file on stdout, where --json would print too: use one of them")
        if sys.stdout.isatty():
            raise UsageError("-o - would write the file to this terminal: redirect stdout (> FILE or | PROGRAM)")
    _seeded(args)
    request = _client_request(args, upload)
    bus = EventBus()
    try:
        transfer = ClientTransfer(request, bus)
    except TransferSetupError as exc:
        raise UsageError(str(exc)) from None
    check, impair = _check_sha(request.expected_sha256, request.output), impair_fields(args)

    def extra(outcome: ClientOutcome) -> dict[str, Any]:
        return {**impair, **check(outcome)}
    if request.output is not None:
        _remove_stale_parts(request.output, args)
    with _trace(bus, args.trace, snaplen=args.trace_snaplen):
        if interactive(args):
            from tftpdiag.tui.launch import run_client_app

            return run_client_app(transfer, bus, extra=extra)
        from tftpdiag.headless import run_client_headless

        sub = bus.subscribe()
        _, summary = run_client_headless(transfer, sub, json_out=args.json, extra=extra,
                                         stdout=sys.stderr if request.stdout else None, verbosity=verbosity(args))
        return EXIT_OK if summary["ok"] else EXIT_FAILED


def _remove_stale_parts(output: Path, args: argparse.Namespace) -> None:
    """Temporary files of earlier downloads to this same path whose tftpdiag was killed go now."""
    from tftpdiag.engine.partfiles import remove_stale, written_through

    final = written_through(output)  # they were made beside the file a link names, as the download's is
    _report_removals(remove_stale(final.parent, target=final), "download", quiet=verbosity(args) < 0)


def _report_removals(removals: list[Any], what: str, quiet: bool = False) -> None:
    """One line on stderr per stale temporary file removed (or not: with ``quiet``, only those), its
    name escaped."""
    from tftpdiag.findings.model import escape_name

    for removal in removals:
        name = escape_name(str(removal.path))
        if removal.error is None:
            if quiet:
                continue
            print(f"tftpdiag: removed {name}, left by an earlier {what} that was killed", file=sys.stderr)
        else:
            print(f"tftpdiag: could not remove {name}, left by an earlier {what}: {removal.error}", file=sys.stderr)


def run_sweep_command(args: argparse.Namespace) -> int:
    """probe --sweep: exit 0 when at least one probe moved data, 1 when none could (or it stopped early)."""
    from tftpdiag.sweep import DEFAULT_PROBES, render_text, run_sweep

    target = client_target(args, upload=False)
    for spec in DEFAULT_PROBES:  # each probe sends its own request: each must fit
        check_request(target.filename, spec.mode, spec.options)
    timing = client_timing(args)
    if interactive(args):
        from tftpdiag.tui.sweep_app import run_sweep_app

        return run_sweep_app(target.host, target.port, target.filename, family=args.family, timing=timing)

    def started(spec: Any, session: int) -> None:
        if verbosity(args) >= 0:
            print(f"tftpdiag: probing with {spec.name} …", file=sys.stderr, flush=True)

    try:
        report = run_sweep(target.host, target.port, target.filename, family=args.family, timing=timing,
                           on_start=started)
    except TransferSetupError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        sys.stdout.write(json_line(report.to_dict()) + "\n")
    elif verbosity(args) >= 0:
        sys.stdout.writelines(line(text) + "\n" for text in render_text(report).splitlines())
    return EXIT_OK if any(r.ok for r in report.results) else EXIT_FAILED


def _bind_key(host: str) -> str:
    """One spelling per address (``[::1]``, ``::1`` and ``0:0::1`` alike); a non-address as given (the
    server says what is wrong with it)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


def server_config(args: argparse.Namespace, inherited: tuple[Any, ...] = ()) -> ServerConfig:
    from tftpdiag.engine.server import ServerConfig

    timing = Timing(initial_timeout=args.timeout or 1.0, retries=args.retries, give_up=args.give_up,
                    adaptive=args.timeout is None)
    # An address given twice is one listener (bound twice it read "address already in use").
    bind = tuple(dict.fromkeys(_bind_key(b) for b in args.bind)) if args.bind else ("0.0.0.0", "::")
    return ServerConfig(
        root=args.dir.resolve() if args.dir.exists() else args.dir, bind=bind, port=args.port,
        allow_upload=args.allow_upload or args.allow_overwrite, allow_overwrite=args.allow_overwrite,
        single_port=args.single_port, policy=server_policy(args), timing=timing, max_sessions=args.max_sessions,
        impair=args.impair, offload=args.offload, inherited=inherited, busy_poll=_busy_poll(args))


class StopFlag(threading.Event):
    """A stop request that a signal handler can make. The handler runs in the main thread between two
    bytecodes, possibly inside this Event's own wait() while it holds the Event's lock: Event.set() there
    waits for that lock for ever (serve hung on Ctrl-C so, seen under py-spy). :meth:`signalled` only
    sets a flag, which wait() and is_set() read: the loops that wait on it (with a timeout, their tick)
    see it at their next wake-up."""

    def __init__(self) -> None:
        super().__init__()
        self._signalled = False

    def signalled(self) -> None:
        self._signalled = True

    def is_set(self) -> bool:
        return self._signalled or super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._signalled or super().wait(timeout) or self._signalled


@contextlib.contextmanager
def _stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """SIGINT and SIGTERM end a server cleanly instead of killing it mid-transfer."""
    def handler(signum: int, frame: object) -> None:
        stop.signalled()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_serve(args: argparse.Namespace) -> int:
    from tftpdiag.engine.activation import ActivationError, activated_sockets
    from tftpdiag.engine.admission import raise_open_file_limit
    from tftpdiag.engine.server import ServerSetupError, TftpServer

    _seeded(args)
    try:
        inherited = tuple(activated_sockets())
    except ActivationError as exc:
        raise UsageError(str(exc)) from None
    raise_open_file_limit()  # before the server sizes itself by it
    bus = EventBus()
    server = TftpServer(server_config(args, inherited), bus)
    try:
        server.bind()
    except ServerSetupError as exc:
        raise UsageError(str(exc)) from None
    quiet = verbosity(args) < 0
    _report_removals(server.stale_parts, "upload", quiet=quiet)
    from tftpdiag.keeping import feed_in_background, server_sinks

    with _trace(bus, args.trace, snaplen=args.trace_snaplen), server_sinks(args, tui=interactive(args)) as sinks:
        if interactive(args):
            from tftpdiag.tui.launch import run_server_app

            finish = feed_in_background(bus, sinks) if sinks else None
            try:
                code = run_server_app(server, bus)
            finally:
                if finish is not None:
                    finish()
            return _served(server, code)
        from tftpdiag.headless import run_server_headless
        from tftpdiag.sessions import fmt_addr

        where = ", ".join(fmt_addr(a) for a in server.addresses)
        access = "uploads allowed" if server.config.allow_upload else "read-only"
        if server.skipped_ipv6:
            access += "; IPv6 is not available on this machine, so IPv4 only"
        if inherited:
            access += "; sockets from systemd socket activation"

        if not quiet:
            print(line(f"tftpdiag: serving {server.root} on {where} ({access}); Ctrl-C to stop"),
                  file=sys.stderr, flush=True)
        stop = StopFlag()
        sub = bus.subscribe()
        with _stop_on_signals(stop):
            from tftpdiag.devices import DeviceBook

            run_server_headless(server, sub, json_out=args.json, stop=stop, sinks=sinks, devices=DeviceBook(),
                                hook=_impair_hook(args), verbosity=verbosity(args))
        if not quiet and server.crashed is None:
            print("tftpdiag: server stopped", file=sys.stderr)
    return _served(server, EXIT_OK)


def _served(server: TftpServer, code: int) -> int:
    """``code``, unless the server stopped by itself on an error of its own (engine/broken.py): that is
    said, whatever -q, and the exit status says it failed (a service manager restarts it)."""
    if server.crashed is None:
        return code
    print(line(f"tftpdiag serve: the server stopped on its own: {server.crashed}"), file=sys.stderr)
    return EXIT_FAILED


def make_sample_image(folder: Path, size: int) -> Path:
    """A deterministic stand-in for a firmware image: a header, then pseudo-random bytes."""
    path = folder / "firmware-demo.bin"
    with open(path, "wb") as f:
        header = b"TFTPDIAG-DEMO-FIRMWARE\0" + size.to_bytes(8, "big")
        f.write(header)
        written, counter = len(header), 0
        while written < size:
            chunk = hashlib.sha256(counter.to_bytes(8, "big")).digest() * 2048
            chunk = chunk[: size - written]
            f.write(chunk)
            written += len(chunk)
            counter += 1
        f.truncate(size)
    return path


def run_demo(args: argparse.Namespace) -> int:
    import tempfile  # here: it imports shutil and random, which a probe's start need not load

    from tftpdiag.engine.scratch import scratch_prefix
    from tftpdiag.engine.server import ServerConfig, ServerSetupError, TftpServer

    bus = EventBus()
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("demo")) as tmp:
        folder = Path(tmp)
        image = make_sample_image(folder, args.size)
        server = TftpServer(ServerConfig(root=folder, bind=("127.0.0.1",), port=0), bus)
        try:
            server.bind()
        except ServerSetupError as exc:
            raise UsageError(str(exc)) from None
        host, port = server.addresses[0]
        request = ClientRequest(host=host, filename=image.name, port=port,
                                options=RequestedOptions(blksize=args.blksize, windowsize=args.windowsize, tsize=True),
                                timing=Timing(dally=0.2))
        transfer = ClientTransfer(request, bus)
        with _trace(bus, args.trace, skip=server.owns, snaplen=args.trace_snaplen):
            if interactive(args):
                from tftpdiag.tui.launch import run_demo_app

                return run_demo_app(server, transfer, bus)
            from tftpdiag.headless import run_client_headless

            print(f"tftpdiag demo: serving {image.name} ({args.size:,} bytes) on {host}:{port}, probing it",
                  file=sys.stderr, flush=True)
            thread = threading.Thread(target=server.serve, daemon=True)
            thread.start()
            try:
                sub = bus.subscribe()
                expected = _sha256_file(image)
                check = _check_sha(expected)
                _, summary = run_client_headless(transfer, sub, json_out=args.json,
                                                 extra=lambda outcome: {"impair": None, **check(outcome)})
            finally:
                server.stop()
                thread.join(5)
        return EXIT_OK if summary["ok"] else EXIT_FAILED


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_trace(args: argparse.Namespace) -> int:
    """Show the transfers in a trace or capture; exit 0 whenever it could be read, whatever they did."""
    from tftpdiag.trace.load import TraceError, load_trace

    try:
        loaded = load_trace(args.path)
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    if interactive(args):
        try:
            from tftpdiag.tui.launch import run_trace_app
        except (ImportError, AttributeError):
            pass  # no trace view in this build yet: the plain summary below still answers
        else:
            return run_trace_app(args.path, loaded.events, loaded.warning)
    from tftpdiag.trace.summary import print_trace, trace_json

    level = verbosity(args)
    if level > 0:
        from tftpdiag.headless import verbose_stream
        from tftpdiag.packetline import packet_lines

        out = verbose_stream(args.json, level)
        assert out is not None
        out.writelines(line(text) + "\n" for text in packet_lines(loaded.events))
    if args.json:
        sys.stdout.write(json_line(trace_json(loaded)) + "\n")
    elif level >= 0:
        print_trace(loaded, sys.stdout)
    elif loaded.warning:
        print(line(f"tftpdiag trace: warning: {loaded.warning}"), file=sys.stderr)
    return EXIT_OK


def run_pxe(args: argparse.Namespace) -> int:
    """Act as a netbooting device: DHCP answers, the boot file probed, a verdict (tftpdiag.pxe)."""
    from tftpdiag.pxe.command import run_pxe as run

    return run(args)
