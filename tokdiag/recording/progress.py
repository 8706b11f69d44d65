"""Progress of a run: one line that updates in place, in a Jupyter kernel or in a terminal.

:func:`progress_bar` picks where the line goes:

- **In a Jupyter kernel** (JupyterLab, Notebook, papermill, nbclient): a
  display output (``text/html`` with a ``<progress>`` bar, and ``text/plain``)
  updated in place with ``update_display_data``, never a stream: it is not
  drawn as the pink stderr box of an error. A background thread redraws it at
  most every :data:`REFRESH_S` seconds when something changed, and ticks the
  elapsed time, so a step that takes a minute still shows where the run is.
  :meth:`ProgressBar.close` with ``keep=False`` (a run that completed) empties
  the output, so the executed notebook keeps no progress above what comes
  next (the answer); ``keep=True`` (a run that failed or stopped) leaves the
  last state: where it stopped. The output carries the metadata
  ``{"tokdiag": "progress"}`` so an exporter can tell it apart.
- **Elsewhere**: :mod:`tqdm` on stderr, left on screen when done.

:class:`JournalFollower` reads the snapshots another process appends to a
journal (:func:`tokdiag.track_isolated`'s child runs without a bar of its
own; the parent follows its journal and draws the bar).

>>> bar = progress_bar(3, "demo", enabled=False)
>>> bar is None
True
"""

from __future__ import annotations

import html
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

__all__ = ["REFRESH_S", "JournalFollower", "ProgressBar", "in_kernel", "progress_bar"]

REFRESH_S = 0.5
"""Seconds between two redraws of a bar (and between two reads of a followed journal)."""

PROGRESS_METADATA = {"tokdiag": "progress"}
"""Metadata of the display output a bar draws in a kernel."""


def in_kernel() -> bool:
    """True inside a Jupyter kernel (ipykernel's shell), where output is a notebook's, not a terminal's."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__module__.startswith("ipykernel")


class ProgressBar:
    """A run's progress: steps done of ``total``, a note (RSS, snapshots), elapsed seconds.

    Both kinds of bar take the same calls: :meth:`update` (steps done since
    the last call), :meth:`set_steps` (steps done so far), :meth:`set_note`,
    :meth:`close`.
    """

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc = total, desc
        self.n = 0
        self.note = ""

    def update(self, n: int = 1) -> None:
        self.set_steps(self.n + n)

    def set_steps(self, n: int) -> None:
        self.n = int(n)

    def set_note(self, note: str) -> None:
        self.note = note

    def close(self, *, keep: bool = True) -> None:
        """End the bar; ``keep=False`` removes it where it can be removed (a notebook's output)."""


class _TerminalBar(ProgressBar):
    """tqdm on stderr."""

    def __init__(self, total: int | None, desc: str) -> None:
        super().__init__(total, desc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tqdm.auto warns when ipywidgets is missing; plain tqdm never does
            from tqdm import tqdm

        self._tqdm = tqdm(total=total, desc=desc, unit="step", mininterval=REFRESH_S, leave=True)

    def set_steps(self, n: int) -> None:
        if n > self.n:
            self._tqdm.update(n - self.n)
        super().set_steps(n)

    def set_note(self, note: str) -> None:
        super().set_note(note)
        self._tqdm.set_postfix_str(note, refresh=False)

    def close(self, *, keep: bool = True) -> None:
        self._tqdm.close()


class _NotebookBar(ProgressBar):
    """A display output updated in place, redrawn from a daemon thread (see the module docstring)."""

    def __init__(self, total: int | None, desc: str) -> None:
        super().__init__(total, desc)
        from IPython.display import display

        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = ""
        self._handle = display(self._bundle(), raw=True, display_id=True, metadata=PROGRESS_METADATA)
        self._drawn = self.text()
        self._thread = threading.Thread(target=self._refresh, name="tokdiag-progress", daemon=True)
        self._thread.start()

    def text(self) -> str:
        """The line as plain text: ``name: 120/300 steps · RSS 212 MiB · 4.1 s``."""
        done = f"{self.n}/{self.total} steps" if self.total else f"{self.n} steps"
        parts = [done, self.note, f"{time.monotonic() - self._t0:.1f} s"]
        return f"{self.desc}: " + " · ".join(p for p in parts if p)

    def _bundle(self) -> dict[str, str]:
        text = self.text()
        bar = (f'<progress value="{min(self.n, self.total)}" max="{self.total}" '
               'style="width:14em;vertical-align:middle;margin-right:0.6em"></progress>') if self.total else ""
        return {"text/plain": text,
                "text/html": f'<div class="tokdiag-progress">{bar}<span>{html.escape(text)}</span></div>'}

    def _draw(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            text = self.text()
            if text != self._drawn:
                self._handle.update(self._bundle(), raw=True, metadata=PROGRESS_METADATA)
                self._drawn = text

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self._draw()
            except Exception:  # a kernel shutting down: the bar is not worth an error
                return

    def close(self, *, keep: bool = True) -> None:
        if self._stop.is_set():
            return
        self._draw()
        with self._lock:
            self._stop.set()
            if not keep:
                self._handle.update({"text/plain": ""}, raw=True, metadata=PROGRESS_METADATA)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * REFRESH_S)


def progress_bar(total: int | None, desc: str, *, enabled: bool = True) -> ProgressBar | None:
    """A bar for a run of ``total`` steps named ``desc``, drawn where the output goes; None when not ``enabled``."""
    if not enabled:
        return None
    return _NotebookBar(total, desc) if in_kernel() else _TerminalBar(total, desc)


class JournalFollower:
    """Follows a journal that another process (``pid``) is writing: the last snapshot's step and RSS.

    :meth:`poll` reads the complete lines added since the last call. Lines of
    a file that another process wrote (an earlier run's journal, before the
    child replaced it) are skipped: the header must name ``pid``. A file that
    is replaced is read again from its start.
    """

    def __init__(self, path: str | os.PathLike[str], pid: int) -> None:
        self.path, self.pid = Path(path), pid
        self.step: int | None = None
        self.rss: float | None = None
        self.snapshots = 0
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._ours = False
        self._partial = b""

    def poll(self) -> bool:
        """Read what was appended; True when a new snapshot arrived."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        inode = (st.st_dev, st.st_ino)
        if inode != self._inode or st.st_size < self._offset:  # a new file at the path: start over
            self._inode, self._offset, self._ours, self._partial = inode, 0, False, b""
            self.step, self.rss, self.snapshots = None, None, 0
        if st.st_size == self._offset:
            return False
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read(st.st_size - self._offset)
        except OSError:
            return False
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        before = self.snapshots
        for raw in lines:
            self._line(raw)
        return self.snapshots > before

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            obj = json.loads(raw)
        except ValueError:
            return
        if type(obj) is not dict:
            return
        if obj.get("kind") == "header":
            self._ours = obj.get("pid") == self.pid
            return
        if not self._ours or obj.get("kind") != "snapshot":
            return
        step = obj.get("step")
        if type(step) is int:
            self.step = step
            self.snapshots += 1
        for r in obj.get("records") or ():
            if type(r) is dict and r.get("probe") == "process" and r.get("metric") == "rss":
                value = r.get("value")
                if isinstance(value, (int, float)) and not isinstance(value, bool):  # parsed JSON, not user objects
                    self.rss = float(value)
