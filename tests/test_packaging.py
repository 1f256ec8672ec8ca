"""The installed distribution holds every package of the tree (an editable install would hide a gap)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared_in_pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    folders = {"edgeqd": ROOT / "edgeqd", **{name: ROOT / folder for name, folder in config["package-dir"].items()}}
    found = set()
    for top, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((top, *relative)))
    assert found == declared, f"missing from pyproject: {sorted(found - declared)}; stale: {sorted(declared - found)}"
