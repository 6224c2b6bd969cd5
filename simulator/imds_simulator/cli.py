"""Command line: ``imds-simulator --scenario FILE [options]``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import threading

from . import __version__
from .scenario import ScenarioError
from .simulator import BIND_MODES, DEFAULT_CONTROL_PORT, DEFAULT_PORT, ConfigError, Simulator


def build_parser():
    """The argument parser (kept separate so docs and tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="imds-simulator",
        description="A faithful Azure IMDS Scheduled Events simulator for rehearsals and tests. "
                    "It only ever binds loopback addresses.")
    parser.add_argument("--scenario", metavar="FILE", help="scenario YAML file (see docs/simulator.md)")
    parser.add_argument("--vm", metavar="NAME", action="append", default=[],
                        help="add a VM with this resource name (repeatable); without --scenario, --vm or --vms "
                             "a single VM 'myvm' is simulated")
    parser.add_argument("--vms", metavar="N", type=int, help="generate a fleet of N VMs named <prefix>0..<prefix>N-1")
    parser.add_argument("--vm-prefix", metavar="P", help="name prefix of generated VMs (default 'vm-')")
    parser.add_argument("--host", help="listener address: 127.0.0.1 in 'ports' mode, the first VM address "
                                       "(default 127.0.0.2) in 'addresses' mode; loopback only")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"IMDS base port (default {DEFAULT_PORT}; VM i listens on port+i in 'ports' mode; "
                             "0 = ephemeral ports)")
    parser.add_argument("--bind-mode", choices=BIND_MODES, default="ports",
                        help="'ports': one port per VM on one address; 'addresses': one loopback address per VM "
                             "(127.0.0.2, 127.0.0.3, ...), same port")
    parser.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT,
                        help=f"control API port on 127.0.0.1 (default {DEFAULT_CONTROL_PORT}; 0 = ephemeral)")
    parser.add_argument("--arm-port", type=int,
                        help="serve the control-plane face (ARM, Resource Graph, a managed-identity token endpoint) on "
                             "this 127.0.0.1 port (0 = ephemeral; default: no control-plane face)")
    parser.add_argument("--identity-header", metavar="SECRET",
                        help="the X-IDENTITY-HEADER value the token endpoint wants (default: random per run)")
    parser.add_argument("--no-imds", action="store_true",
                        help="bind no per-VM IMDS listener (a control-plane-only fleet); needs --arm-port")
    parser.add_argument("--time-scale", type=float, help="simulated seconds per real second (overrides the scenario)")
    parser.add_argument("--clock", choices=("scaled", "manual"),
                        help="'manual': time only moves through POST /clock/advance (overrides the scenario)")
    parser.add_argument("--rate-limit", type=int, help="IMDS requests per second per VM before 429 (0 = off; default 5)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once listening, write a JSON file with every VM's endpoint and the control URL")
    parser.add_argument("--log-requests", action="store_true", help="print every IMDS request to stderr")
    parser.add_argument("--request-log-size", type=int, default=10000, metavar="N",
                        help="entries kept for GET /requests (default 10000)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _print_request(entry):
    stamp = datetime.datetime.fromtimestamp(entry["wall_time"], datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    status = entry["status"] if entry["status"] is not None else "dropped"
    fault = f" [fault: {entry['fault']}]" if entry["fault"] else ""
    sys.stderr.write(f"{stamp} sim={entry['sim_time']:.1f}s {entry['vm']} {entry['method']} {entry['path']} "
                     f"-> {status}{fault}\n")


def write_ready_file(path, sim):
    """Atomically write the endpoints file a harness waits for."""
    payload = {
        "pid": os.getpid(),
        "control": sim.control_url,
        "vms": sim.endpoints(),
        "clock": sim.clock.mode,
        "time_scale": sim.clock.time_scale,
        "scenario": sim.scenario.source,
    }
    if sim.arm_url:
        payload.update(arm=sim.arm_url, identity_header=sim.identity_header)
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)


def main(argv=None):
    """Run until SIGTERM/SIGINT; exit 2 on a bad scenario or option, 1 if a port cannot be bound."""
    args = build_parser().parse_args(argv)
    if args.vms is not None and args.vms < 1:
        sys.stderr.write("imds-simulator: error: --vms must be at least 1\n")
        return 2
    if args.vm_prefix is not None and args.vms is None:
        sys.stderr.write("imds-simulator: error: --vm-prefix needs --vms\n")
        return 2
    if args.no_imds and args.arm_port is None:
        sys.stderr.write("imds-simulator: error: --no-imds needs --arm-port (otherwise nothing would listen)\n")
        return 2
    try:
        sim = Simulator.from_scenario(
            args.scenario, vms=args.vm, fleet=args.vms, vm_prefix=args.vm_prefix, time_scale=args.time_scale,
            clock=args.clock, rate_limit=args.rate_limit, host=args.host, port=args.port,
            control_port=args.control_port, bind_mode=args.bind_mode, request_log_size=args.request_log_size,
            on_request=_print_request if args.log_requests else None, arm_port=args.arm_port,
            identity_header=args.identity_header, imds=not args.no_imds)
    except (ScenarioError, ConfigError) as exc:
        sys.stderr.write(f"imds-simulator: error: {exc}\n")
        return 2
    stop = threading.Event()

    def _stop(signum, frame):
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sim.start()
    except OSError as exc:
        sys.stderr.write(f"imds-simulator: error: {exc.strerror or exc}\n")
        return 1
    try:
        settings = sim.scenario.settings
        print(f"imds-simulator: scenario {settings.name!r} ({sim.scenario.source}), clock {sim.clock.mode}, "
              f"time scale {sim.clock.time_scale:g}, {len(sim.world.vms)} VM(s)")
        for name, url in sim.endpoints().items():
            print(f"imds-simulator: VM {name} IMDS listening on {url}")
        if sim.control_url:
            print(f"imds-simulator: control API listening on {sim.control_url}")
        if sim.arm_url:
            print(f"imds-simulator: control plane (ARM, Resource Graph) listening on {sim.arm_url}, "
                  f"token endpoint {sim.identity_endpoint}")
        sys.stdout.flush()
        if args.ready_file:
            write_ready_file(args.ready_file, sim)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        if args.ready_file:
            try:
                os.unlink(args.ready_file)
            except OSError:
                pass
    print("imds-simulator: stopped")
    return 0
