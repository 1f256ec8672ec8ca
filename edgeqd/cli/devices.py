"""``edgeqd devices list|probe|setup``: the device registry from the command line.

Exit codes: 0 ok, 2 usage (a refused devices file, ``--timeout 0``), 5 a probe or a
setup that failed.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeqd.cli.common import FiniteFloat, console, handle_errors, print_json
from edgeqd.cli.options import force_option, json_option


@click.group("devices")
def devices_group() -> None:
    """List, probe and set up devices."""


@devices_group.command("list")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path), default=None,
              help="Also list the devices configured in this YAML file.")
@json_option
@handle_errors
def devices_list(devices_file, as_json) -> None:
    """Show the registered device kinds (and the devices of a devices file)."""
    from rich.table import Table

    from edgeqd.devices import DEVICES, load_devices_file
    from edgeqd.devices.qemu import RECIPES, sysroot_ready

    kinds = []
    for name, cls in DEVICES.items():
        state = ""
        if name in RECIPES:
            state = "sysroot ready" if sysroot_ready(name) else "sysroot not built (built on first use)"
        kinds.append({"kind": name, "emulated": cls.emulated, "description": cls.description, "state": state})
    configured = [{"name": c.name or c.spec, "spec": c.spec, "notes": c.notes, "options": c.options}
                  for c in (load_devices_file(devices_file) if devices_file else [])]
    if as_json:
        print_json({"kinds": kinds, "configured": configured})
        return
    table = Table(title="device kinds")
    for column in ("kind", "emulated", "description", "state"):
        table.add_column(column)
    for kind in kinds:
        table.add_row(kind["kind"], "yes" if kind["emulated"] else "no", kind["description"], kind["state"])
    console().print(table)
    if configured:
        table = Table(title=f"configured in {devices_file}")
        for column in ("name", "spec", "notes"):
            table.add_column(column)
        for entry in configured:
            table.add_row(entry["name"], entry["spec"], entry["notes"])
        console().print(table)


@devices_group.command("probe")
@click.argument("spec")
@click.option("--timeout", default=120.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Seconds for the probe (> 0).")
@handle_errors
def devices_probe(spec, timeout) -> None:
    """Print what device SPEC has: CPU, cores, memory, OS, Python and runtimes (JSON)."""
    from edgeqd.devices import device_from_spec

    device = device_from_spec(spec)
    result = device.probe(timeout=timeout)
    result["kind"] = device.kind
    result["emulated"] = bool(device.emulated or result.get("device", {}).get("emulated"))
    print_json(result)


@devices_group.command("setup")
@click.argument("spec")
@force_option
@handle_errors
def devices_setup(spec, force) -> None:
    """Make device SPEC ready: build a qemu sysroot (cached, idempotent) or install the runtime over ssh."""
    from edgeqd.devices import device_from_spec

    click.echo(device_from_spec(spec).setup(force=force))


def register(group: click.Group) -> None:
    """Add ``devices`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(devices_group)
