"""Map the four layer folders into the ``pytsnet`` namespace.

The repository keeps ``actors/``, ``messages/``, ``netstack/`` and ``wire/`` at the top level
(the design card), but they must only ever be importable as ``pytsnet.<layer>``.
"""

from setuptools import find_packages, setup

LAYERS = ("actors", "messages", "netstack", "wire")

packages = ["pytsnet", *(f"pytsnet.{p}" for p in find_packages("pytsnet"))]
package_dir = {"pytsnet": "pytsnet"}
for layer in LAYERS:
    package_dir[f"pytsnet.{layer}"] = layer
    packages.append(f"pytsnet.{layer}")
    packages.extend(f"pytsnet.{layer}.{p}" for p in find_packages(layer))

setup(packages=packages, package_dir=package_dir)
