"""The IMDS simulator as pytest fixtures, for suites whose VMs (containers) poll it on the host's loopback."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT / "simulator") not in sys.path:
    sys.path.insert(0, str(ROOT / "simulator"))

from imds_simulator import ControlClient, Simulator  # noqa: E402  pylint: disable=wrong-import-position


def simulator_fixtures(scenario, control_class=ControlClient, **options):
    """Module-scoped `sim` (the scenario on a manual clock, ports of its own) and `control` (its control API).
    `options` go to the Simulator (``arm_port=0`` adds the control-plane face).

    In a test module: ``sim, control = simulator_fixtures(SCENARIO)``.
    """

    @pytest.fixture(scope="module")
    def sim():
        with Simulator.from_scenario(scenario, clock="manual", port=0, control_port=0, **options) as simulator:
            yield simulator

    @pytest.fixture(scope="module")
    def control(sim):  # pylint: disable=redefined-outer-name
        return control_class(sim.control_url)

    return sim, control
