"""``edgeqd report``: a thin shell over :func:`edgeqd.reporting.write_report`.

Registered on the main group by :func:`register`.

>>> report_command.name
'report'
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgeqd.cli.common import handle_errors
from edgeqd.cli.options import force_option, out_option


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option("Output file [default: report.html, or report.md with --markdown].", required=False, metavar="FILE")
@click.option("--markdown", is_flag=True, help="Write Markdown (for a pull request) instead of HTML.")
@click.option("--title", default=None, help="Title of the report.")
@force_option
@handle_errors
def report_command(run_dirs: tuple[Path, ...], out: Optional[Path], markdown: bool, title: Optional[str],
                   force: bool) -> None:
    """Build a self-contained report from RUN_DIRS (convert output folders with manifest.json,
    and/or bench JSON files or folders holding them): pipeline settings, accuracy vs size and
    vs latency with the Pareto front, latency per device and thread count, memory, parity."""
    from edgeqd.reporting import write_report

    path = write_report(list(run_dirs), out=out, markdown=markdown, title=title, force=force)
    click.echo(f"wrote {path}")


def register(group: click.Group) -> None:
    """Add ``report`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group("demo"))
    """
    group.add_command(report_command)
