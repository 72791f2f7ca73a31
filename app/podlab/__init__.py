"""Podlab: a desktop lab for open LLMs."""

__version__ = "0.1.0"
