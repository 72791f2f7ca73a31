"""Package discovery: every package under app/ ships, plus the two data trees kept at the top level.

pyproject.toml cannot combine `packages.find` with packages mapped from other folders, so the
list is computed here; a new subpackage can never silently drop out of the wheel.
"""

from setuptools import find_namespace_packages, find_packages, setup

data_trees = {"podlab.resources": "resources", "podlab.recipes": "recipes"}
packages = find_packages("app")
for package, folder in data_trees.items():
    packages += [package, *(f"{package}.{sub}" for sub in find_namespace_packages(folder))]

setup(packages=packages)
