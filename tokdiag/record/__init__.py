"""Recording: the step loop and everything that writes or reads journals (being moved here), and services.

Here now: :mod:`tokdiag.record.recorder` (the in-process recorder of a
running service), :mod:`tokdiag.record.middleware` (ASGI/WSGI middleware
counting requests as its steps), :mod:`tokdiag.record.attach` (``tokdiag
attach PID``: the same recorder started inside a running process) and
:mod:`tokdiag.record.service` (a service's journals, one per process, read
as one).

The package is also the function that starts a recorder: ``td.record(journal,
every_s=60, ...)`` calls :func:`tokdiag.record.recorder.record` (a package
and a function cannot share the name ``tokdiag.record`` otherwise: importing
a submodule rebinds the name to the package).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tokdiag.record.recorder import record

        return record(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
