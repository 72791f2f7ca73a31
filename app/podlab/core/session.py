"""Where the user left each page (the Playground's conversation and endpoint, Compare's panes),
so that Podlab opens there again after a restart.

One small JSON file in the state folder, written atomically and readable by the user alone (it
names endpoints and models; API keys are never written). Each page owns one section. A broken
or missing file is an empty session: remembering is a convenience, never a reason to fail.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podlab.core.paths import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Session:
    """The remembered state of every page, by section name."""

    path: Path
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Session:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("the saved session %s is not read: %s", path, exc)
            return cls(path)
        if not isinstance(data, dict):
            return cls(path)
        sections = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}
        return cls(path, sections)

    def get(self, section: str) -> dict[str, Any]:
        """A copy of what `section` saved ({} when nothing was)."""
        return json.loads(json.dumps(self.sections.get(section, {})))  # type: ignore[no-any-return]

    def put(self, section: str, value: dict[str, Any]) -> None:
        """Remember `value` for `section` and write the file at once (file mode 0600)."""
        self.sections[section] = json.loads(json.dumps(value))
        text = json.dumps(self.sections, indent=2, sort_keys=True, ensure_ascii=False)
        try:
            atomic_write_text(self.path, text + "\n", private=True)
        except OSError as exc:
            log.warning("the session is not saved to %s: %s", self.path, exc.strerror or exc)
