"""Reusable widgets: the streaming Markdown view and the chat view built from it."""
