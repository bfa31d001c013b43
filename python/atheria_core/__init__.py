"""``atheria_core``, the lab's native engine module, over atheria: ``import atheria_core`` in a
lab checkout runs the lab on atheria with no edit. Everything here is :mod:`atheria.native`
(one implementation, two names); docs/python.md lists where it differs from the C++ module.

Importing it never fails because of a broken GPU install: GPU probes run in a child
interpreter, and ``device="cuda"`` without a working CUDA falls back with a warning.
"""

from atheria.native import *  # noqa: F401,F403 - the module is this re-export
from atheria.native import VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH, __all__, __version__  # noqa: F401
