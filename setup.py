"""Package discovery that pyproject.toml cannot express: every ``baize_tui`` subpackage, plus
``convert/`` installed under the import name ``baize_convert`` (so no bare ``convert`` module
lands in site-packages)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["baize_tui", "baize_tui.*"])
    + ["baize_convert" + p.removeprefix("convert") for p in find_packages(include=["convert", "convert.*"])],
    package_dir={"baize_tui": "baize_tui", "baize_convert": "convert"},
)
