"""The Simulator: a world, its IMDS listeners, the control API and the control-plane face in one object.

This is also the Python API for tests in the same process::

    sim = Simulator.from_scenario("simulator/scenarios/demo.yaml", port=0, control_port=0, clock="manual")
    with sim:
        url = sim.endpoint("myvm")       # http://127.0.0.1:<port>
        sim.world.advance(60)            # or POST <sim.control_url>/clock/advance
"""

from __future__ import annotations

import ipaddress
import secrets
import time

from . import clock as clock_mod
from . import scenario as scenario_mod
from .arm import TOKEN_PATH, ArmHandler, ArmService
from .control import ControlHandler, ControlService
from .eventgrid import Publisher
from .imds import ImdsService
from .listener import ListenerPool, LoopbackServer
from .traffic import RateLimiter, RequestLog
from .world import World

DEFAULT_PORT = 8169
DEFAULT_CONTROL_PORT = 9169
BIND_MODES = ("ports", "addresses")


class ConfigError(ValueError):
    """A listener configuration the simulator refuses (e.g. a non-loopback address)."""


def check_loopback(host, what):
    """Refuse to bind anything but 127.0.0.0/8 or ::1; returns the IP literal to bind."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what} {host!r} is not an IP address; only loopback addresses "
                          "(127.0.0.0/8 or ::1) may be used") from None
    if not address.is_loopback:
        raise ConfigError(f"{what} {host} is not a loopback address; the simulator only binds "
                          "127.0.0.0/8 or ::1 so it can never be reached from, or reach, another machine")
    return str(address)


def make_clock(settings, wall=time.time):
    """The clock a scenario asks for."""
    if settings.clock == "manual":
        epoch = clock_mod.parse_iso8601(settings.start_time) if settings.start_time else None
        return clock_mod.ManualClock(epoch=epoch, time_scale=settings.time_scale)
    return clock_mod.ScaledClock(settings.time_scale, wall=wall)


def url_for(host, port):
    """``http://host:port`` with IPv6 brackets when needed."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Simulator:  # pylint: disable=too-many-instance-attributes
    """IMDS for a set of simulated VMs plus the control API.

    ``port``: IMDS base port (VM i gets port + i in ``ports`` mode; every VM
    gets ``port`` on its own address in ``addresses`` mode); 0 = ephemeral.
    ``host``: listener address (``ports`` mode, default 127.0.0.1) or first
    VM address (``addresses`` mode, default 127.0.0.2). ``control_port``:
    control API port on 127.0.0.1, 0 = ephemeral, None = no control API.
    ``arm_port``: the control-plane face (ARM, Resource Graph, token endpoint)
    on 127.0.0.1, 0 = ephemeral, None (the default) = none. ``identity_header``:
    the secret its token endpoint wants (random by default). ``imds`` False
    binds no per-VM IMDS listener (a control-plane-only fleet, e.g. for benchmarks).
    ``wall``, ``monotonic`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, scenario, *, host=None, port=DEFAULT_PORT, control_port=DEFAULT_CONTROL_PORT, bind_mode="ports",
                 clock=None, wall=time.time, monotonic=time.monotonic, sleep=time.sleep, request_log_size=10000,
                 on_request=None, arm_port=None, identity_header=None, imds=True):
        if bind_mode not in BIND_MODES:
            raise ConfigError(f"unknown bind mode {bind_mode!r} (expected one of {', '.join(BIND_MODES)})")
        for option, value in (("--port", port), ("--control-port", control_port), ("--arm-port", arm_port)):
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"{option} {value} is not a TCP port (0-65535)")
        if request_log_size < 1:
            raise ConfigError("--request-log-size must be at least 1")
        self.scenario = scenario
        self.bind_mode = bind_mode
        self.clock = clock if clock is not None else make_clock(scenario.settings, wall)
        self.world = World(scenario, self.clock, wall=wall)
        self.limiter = RateLimiter(scenario.settings.rate_limit, monotonic=monotonic)
        self.request_log = RequestLog(request_log_size)
        self.imds = ImdsService(self.world, self.limiter, self.request_log, sleep=sleep, monotonic=monotonic,
                                wall=wall, on_request=on_request)
        self.control = ControlService(self)
        self.identity_header = identity_header or secrets.token_hex(16)
        # Tokens are dated on the real clock whatever ``wall`` is: clients compare expires_on with their own.
        self.arm = ArmService(self.world, self.identity_header, monotonic=monotonic, request_log_size=request_log_size)
        # Event Grid's retry delays follow an injected ``sleep`` (tests: no waiting), else they are interruptible waits.
        self.event_grid = Publisher(self.world, wall=wall, log_size=request_log_size,
                                    wait=None if sleep is time.sleep else (lambda seconds, _stop: sleep(seconds)))
        self.imds_enabled = imds
        self._plan = self._plan_addresses(host, port) if imds else {}
        self._control_port = control_port
        self._arm_port = arm_port
        if control_port and ("127.0.0.1", control_port) in self._plan.values():
            raise ConfigError(f"control port {control_port} collides with a VM's IMDS listener; pick another --control-port")
        if arm_port and (("127.0.0.1", arm_port) in self._plan.values() or arm_port == control_port):
            raise ConfigError(f"ARM port {arm_port} collides with another listener; pick another --arm-port")
        self._pool = None
        self._control_address = None
        self._arm_address = None

    @classmethod
    def from_scenario(cls, source=None, *, vms=(), fleet=None, vm_prefix=None, time_scale=None, clock=None,
                      rate_limit=None, **kwargs):
        """Build from a scenario file path, a dict or a Scenario, plus command-line style overrides.

        ``vms``: extra VM names; ``fleet``/``vm_prefix``: generate N VMs;
        ``time_scale``/``clock``/``rate_limit`` override the scenario's
        settings. Other keyword arguments go to the constructor.
        """
        scenario = scenario_mod.build_scenario(
            source, extra_vms=vms, fleet_count=fleet, fleet_prefix=vm_prefix,
            overrides={"time_scale": time_scale, "clock": clock, "rate_limit": rate_limit})
        return cls(scenario, **kwargs)

    def _plan_addresses(self, host, port):
        """(host, port) for every VM, checked to be loopback."""
        plan = {}
        if self.bind_mode == "ports":
            base_host = check_loopback(host or "127.0.0.1", "--host")
            for index, vm in enumerate(self.scenario.vms):
                vm_host = check_loopback(vm.address, f"address of VM {vm.name}") if vm.address else base_host
                vm_port = vm.port if vm.port is not None else (port + index if port else 0)
                if vm_port > 65535:
                    raise ConfigError(f"VM {vm.name} would get port {vm_port}; lower --port or use --bind-mode addresses")
                plan[vm.name] = (vm_host, vm_port)
        else:
            first = ipaddress.ip_address(check_loopback(host or "127.0.0.2", "--host"))
            for index, vm in enumerate(self.scenario.vms):
                if vm.address:
                    vm_host = check_loopback(vm.address, f"address of VM {vm.name}")
                else:
                    try:
                        candidate = first + index
                    except ipaddress.AddressValueError:
                        candidate = None
                    if candidate is None or not candidate.is_loopback:
                        raise ConfigError(f"not enough loopback addresses from {first} for {len(self.scenario.vms)} VMs")
                    vm_host = str(candidate)
                plan[vm.name] = (vm_host, vm.port if vm.port is not None else port)
        return plan

    # -- lifecycle ---------------------------------------------------------------

    def start(self):
        """Bind every listener (raising OSError with the address on failure) and start serving."""
        pool = ListenerPool(self.imds, self.world.down_vms)
        try:
            for name, address in self._plan.items():
                try:
                    pool.bind(name, address)
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot listen for VM {name} on {url_for(*address)}: {exc.strerror}") from None
            if self._control_port is not None:
                try:
                    control = LoopbackServer(("127.0.0.1", self._control_port), ControlHandler, self.control, "control")
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot listen for the control API on 127.0.0.1:{self._control_port}: "
                                             f"{exc.strerror}") from None
                self._control_address = pool.add_fixed(control)
            if self._arm_port is not None:
                try:
                    arm = LoopbackServer(("127.0.0.1", self._arm_port), ArmHandler, self.arm, "arm")
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot listen for the control-plane face on 127.0.0.1:{self._arm_port}: "
                                             f"{exc.strerror}") from None
                self._arm_address = pool.add_fixed(arm)
        except OSError:
            pool.stop()
            raise
        self._pool = pool
        pool.start()
        self.event_grid.start()
        self._subscribe_scenario()
        return self

    def _subscribe_scenario(self):
        """The scenario's Event Grid subscriptions (``control_plane.event_grid``), made at start and after a reset."""
        for spec in self.scenario.control_plane.event_grid:
            self.event_grid.subscribe(spec)

    def stop(self):
        """Stop serving and close every socket."""
        self.event_grid.stop()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
            self._control_address = None
            self._arm_address = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def reset(self):
        """Back to the scenario's start: world, clock, rate limits, warm-ups, the request log, Event Grid."""
        self.event_grid.reset()
        self.world.reset()
        self.limiter.reset()
        self.imds.faults.reset()
        self.request_log.clear()
        self.arm.reset()
        self.settle()
        if self._pool is not None:
            self._subscribe_scenario()

    def settle(self):
        """Make the listeners follow the world now (a reboot closes one, its end reopens it)."""
        if self._pool is not None:
            self._pool.settle()

    # -- addresses -------------------------------------------------------------

    def address(self, vm):
        """(host, port) of a VM's IMDS listener (the real port once started)."""
        if self._pool is not None:
            return self._pool.address(vm)
        return self._plan[vm]

    def endpoint(self, vm):
        """Base URL of a VM's IMDS, e.g. ``http://127.0.0.1:8169``."""
        return url_for(*self.address(vm))

    def is_listening(self, vm):
        """Whether the VM's listener is open (False while it reboots or before start)."""
        return self._pool is not None and self._pool.is_open(vm)

    @property
    def control_url(self):
        """Base URL of the control API, None when it is disabled or not started."""
        return url_for(*self._control_address) if self._control_address is not None else None

    def endpoints(self):
        """Every VM's IMDS base URL, in scenario order (none without IMDS listeners)."""
        return {name: self.endpoint(name) for name in self.world.vms} if self.imds_enabled else {}

    @property
    def arm_url(self):
        """Base URL of the control-plane face (use it instead of https://management.azure.com), None when off."""
        return url_for(*self._arm_address) if self._arm_address is not None else None

    @property
    def identity_endpoint(self):
        """The token endpoint for ``IDENTITY_ENDPOINT`` (with ``IDENTITY_HEADER`` = ``identity_header``), or None."""
        return self.arm_url + TOKEN_PATH if self.arm_url is not None else None
