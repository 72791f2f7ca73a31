"""Everything in Podlab that is not Qt: asyncio coroutines and plain objects.

The GUI (`podlab.ui`) and the CLI (`podlab.cli`) are two faces of this package.
"""
