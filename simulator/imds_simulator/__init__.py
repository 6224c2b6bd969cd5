"""A faithful, standalone Azure IMDS Scheduled Events simulator.

Unlike Microsoft's mock server its IMDS never shows a Completed or Canceled
status, keeps one EventId from Scheduled to Started, and bumps
DocumentIncarnation on every change of a VM's document. Its optional
control-plane face (ARM, Resource Graph, a managed-identity token endpoint)
serves the same world, Completed and Canceled included, and its Event Grid
face pushes the same changes to webhook subscribers. Stdlib + PyYAML only
(cryptography for the Entra tokens of Event Grid, imported then); loopback only.
See docs/simulator.md.
"""

__version__ = "0.1.0"

from .client import ControlClient, ControlError  # noqa: E402  pylint: disable=wrong-import-position
from .scenario import ScenarioError, build_scenario, load_scenario  # noqa: E402  pylint: disable=wrong-import-position
from .simulator import ConfigError, Simulator  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["ConfigError", "ControlClient", "ControlError", "ScenarioError", "Simulator", "build_scenario", "load_scenario", "__version__"]
