"""Package ``pytsnet``: the facade in ``pytsnet/`` and the four layers through symlinks.

The repository keeps ``actors/``, ``messages/``, ``netstack/`` and ``wire/`` at the top level (the
design card); ``pytsnet/<layer>`` is a symlink to ``../<layer>``, so the layers are only ever
importable as ``pytsnet.<layer>`` and every tool (mypy, pyright, import-linter, an IDE) sees the same
module graph the wheel installs. ``find_packages`` follows the symlinks; the include keeps the
top-level folders out of the wheel.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["pytsnet", "pytsnet.*"]), package_data={"pytsnet": ["py.typed"]})
