"""``edgeqd data fetch`` and ``edgeqd formats``: what edgeqd can read and write."""

from __future__ import annotations

import click

from edgeqd.cli.common import console, handle_errors, print_json
from edgeqd.cli.options import force_option, json_option


@click.group("data")
def data_group() -> None:
    """Provide and inspect datasets."""


@data_group.command("fetch")
@force_option
@handle_errors
def data_fetch(force: bool) -> None:
    """Make the built-in Fashion-MNIST available (Debian's dataset-fashion-mnist) and check its files.

    With --force it is fetched again into the cache (as root: the package is reinstalled),
    replacing damaged files.
    """
    from edgeqd.data import provide_fashion_mnist

    click.echo(str(provide_fashion_mnist(force=force)))


@click.command("formats")
@json_option
def formats_command(as_json: bool) -> None:
    """List the registered output formats."""
    from rich.table import Table

    from edgeqd.converters import CONVERTERS

    columns = ("name", "file", "runtime", "quantized", "description")
    rows = [{"name": c.name, "file": c.filename, "runtime": c.runtime, "quantized": c.quantized,
             "description": c.description} for c in CONVERTERS.values()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="output formats")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console().print(table)


def register(group: click.Group) -> None:
    """Add ``data`` and ``formats`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(data_group)
    group.add_command(formats_command)
