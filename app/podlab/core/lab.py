"""The application's shared state: settings, folders and the task list, for GUI and CLI alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from podlab.core.engine import Engine
from podlab.core.paths import Locations
from podlab.core.settings import LoadedSettings, Settings, load_settings
from podlab.core.tasks import TaskManager


@dataclass
class Lab:
    """What every page and command needs; built once per process."""

    locations: Locations
    loaded_settings: LoadedSettings
    tasks: TaskManager = field(default_factory=TaskManager)

    @classmethod
    def open(cls, locations: Locations | None = None) -> Lab:
        locations = locations or Locations.default()
        return cls(locations=locations, loaded_settings=load_settings(locations.settings_file))

    @property
    def settings(self) -> Settings:
        return self.loaded_settings.settings

    @cached_property
    def engine(self) -> Engine:
        """The one Podman connection of this process (discovered on its first `connect()`)."""
        return Engine(self.settings, locations=self.locations)
