"""The Qt face of Podlab: PySide6 widgets over `podlab.core`, driven by one qasync loop."""
