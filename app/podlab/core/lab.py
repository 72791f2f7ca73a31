"""The application's shared state: settings, folders and the task list, for GUI and CLI alike.

Heavy parts (the asyncio task list, the Podman engine with httpx and podman-py) are created on
first use, so the window can appear before they are imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from podlab.core.paths import Locations, tighten_private_files
from podlab.core.settings import LoadedSettings, Settings, load_settings

if TYPE_CHECKING:
    from podlab.core.chat.conversations import ConversationStore
    from podlab.core.serving.engine import Engine
    from podlab.core.session import Session
    from podlab.core.tasks import TaskManager


@dataclass
class Lab:
    """What every page and command needs; built once per process."""

    locations: Locations
    loaded_settings: LoadedSettings
    conversations_problem: str = field(default="", init=False)
    """Why conversations are kept in memory only (the database could not be opened), or ""."""

    @classmethod
    def open(cls, locations: Locations | None = None) -> Lab:
        locations = locations or Locations.default()
        tighten_private_files(locations)
        return cls(locations=locations, loaded_settings=load_settings(locations.settings_file))

    @property
    def settings(self) -> Settings:
        return self.loaded_settings.settings

    @cached_property
    def tasks(self) -> TaskManager:
        """Every long job of this process; asyncio is imported only once one is needed."""
        from podlab.core.tasks import TaskManager

        return TaskManager()

    @cached_property
    def engine(self) -> Engine:
        """The one Podman connection of this process (discovered on its first `connect()`).

        Imported here, not at module level: httpx and podman-py are not needed to show the window.
        """
        from podlab.core.serving.engine import Engine

        return Engine(self.settings, locations=self.locations)

    @cached_property
    def session(self) -> Session:
        """Where each page was left when Podlab last closed (read once, saved on change)."""
        from podlab.core.session import Session

        return Session.load(self.locations.session_file)

    @cached_property
    def conversations(self) -> ConversationStore:
        """The one conversation store of this process (Playground and Compare share it), on
        the database file; in memory, with `conversations_problem` saying why, when the file
        cannot be opened, so that chatting still works."""
        from podlab.core.chat.conversations import ConversationStore
        from podlab.core.errors import PodlabError

        try:
            return ConversationStore(self.locations.database_file)
        except PodlabError as exc:
            self.conversations_problem = (
                f"{exc.message}. Conversations are kept in memory until Podlab quits."
            )
            return ConversationStore(":memory:")

    def close(self) -> None:
        """Close what this Lab opened (the conversation store); the process is ending."""
        store = self.__dict__.pop("conversations", None)
        if store is not None:
            store.close()
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.close()
