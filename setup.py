"""Packages of the one importable `medq` package.

The requested top-level folders (`engine/`, `storage/`, `tasks/`, `flows/`, `dashboards/`) are
linked into the package folder (`medq/engine -> ../engine`, ...), so `medq.engine` *is*
`engine/` for Python, the installer, type checkers, linters and IDEs alike (no import hook, no
`package_dir` mapping), and nothing generic like `engine` lands at the top of site-packages.
Everything else lives in pyproject.toml.
"""
from setuptools import find_packages, setup

# find_packages follows the folder links; every folder with an __init__.py is a package.
setup(packages=find_packages(include=["medq", "medq.*"]))
