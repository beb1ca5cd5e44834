"""Package discovery, which pyproject.toml cannot express on its own: every package under
``limefast/`` is found (a new folder cannot be left out of the wheel), and ``kernels/`` at the
repository's root is installed as ``limefast.kernels``. Nothing installs a top-level
``kernels``. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["limefast", "limefast.*"]) + ["limefast.kernels"],
    package_dir={"limefast.kernels": "kernels"},
)
