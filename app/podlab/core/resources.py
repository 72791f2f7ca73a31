"""Files shipped inside the package (`resources/`, `recipes/`), found with importlib.resources.

Both folders live at the top of the repository and are mapped into the wheel as
`podlab.resources` and `podlab.recipes`, so a checkout and an installed wheel behave the same.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def resource(name: str) -> Traversable:
    """A file or folder under `resources/`."""
    return resources.files("podlab.resources").joinpath(name)


def recipe_file(name: str) -> Traversable:
    """A file or folder under `recipes/`."""
    return resources.files("podlab.recipes").joinpath(name)
