# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A role's templates rendered by Ansible's own templating, as the template module renders them: the role's
defaults and vars are templates (trusted), and what a test adds is data unless it says otherwise."""

from __future__ import annotations

import os

import yaml


def trusted(value):
    """`value` with every string a trusted template (what a role's own files are)."""
    from ansible.template import trust_as_template  # pylint: disable=import-outside-toplevel

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(v) for v in value]
    if isinstance(value, dict):
        return dict((k, trusted(v)) for k, v in value.items())
    return value


def load(role, name):
    with open(os.path.join(role, name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def templar(role, variables):
    """A Templar with the role's defaults and vars, then `variables` (data)."""
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar  # pylint: disable=import-outside-toplevel

    merged = {}
    for name in ("defaults/main.yml", "vars/main.yml"):
        merged.update(trusted(load(role, name)))
    merged.update(variables)
    return Templar(loader=DataLoader(), variables=merged)


def render(role, template, variables):
    """The role's templates/`template` rendered with templar(role, variables)."""
    from ansible.template import trust_as_template  # pylint: disable=import-outside-toplevel

    with open(os.path.join(role, "templates", template), encoding="utf-8") as handle:
        return str(templar(role, variables).template(trust_as_template(handle.read())))
