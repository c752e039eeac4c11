"""The server as an ASGI app, and `grader serve`: records opened, queue started, uvicorn run."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from grader.classrun.gradebook import Gradebook
from grader.files import PARTIAL
from grader.service import pages
from grader.service.auth import LimitBody, SecurityHeaders
from grader.service.config import CONFIG_NAME, ConfigError, load_config
from grader.service.queue import GradingQueue
from grader.service.routes import routes
from grader.service.store import Store

log = logging.getLogger("grader.serve")
# Room for the form around the notebook: field names, boundaries, the CSRF token.
_FORM_OVERHEAD = 64 * 1024


def _remove_orphans(data: Path, store: Store) -> None:
    """Upload folders without a row: a server stopped between saving a notebook and queuing
    it, whose student got no answer and was told nothing was taken."""
    uploads = data / "uploads"
    known = store.folders()
    for folder in uploads.glob("*/*"):
        if f"{folder.parent.name}/{folder.name}" not in known:
            shutil.rmtree(folder, ignore_errors=True)
    for partial in uploads.rglob(f".*{PARTIAL}*"):
        partial.unlink(missing_ok=True)


def _lock(data: Path) -> IO[bytes]:
    """Hold the data folder for this server alone. A second server on it would delete the
    uploads the first is saving (as orphans), and queue again what the first is grading."""
    data.mkdir(parents=True, exist_ok=True)
    lock = (data / "server.lock").open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"another `grader serve` is serving {data}: stop it first, or "
                          "give this one another --data folder") from None
    return lock


def create_app(data: Path, config_path: Path | None = None, cluster: str | None = None
               ) -> Starlette:
    """The server of the course whose records live in `data` (course.toml there by default),
    grading on the Dask cluster `cluster` when given (in place of course.toml's).

    Raises ConfigError, StoreError, GradebookError, SpecError, SandboxUnavailable or
    ClusterError (each a GraderError) when the server cannot run safely; nothing is listened
    on by then.
    """
    data = data.resolve()
    config, specs = load_config(config_path or data / CONFIG_NAME, cluster)
    lock = _lock(data)
    (data / "uploads").mkdir(parents=True, exist_ok=True)
    store = Store(data / "server.sqlite")
    book = Gradebook(data / "gradebook.sqlite")
    queue = GradingQueue(config, specs, data, store, book)
    try:
        _remove_orphans(data, store)
    except BaseException:
        queue.close()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await queue.start()
        try:
            yield
        finally:
            await queue.stop()
            queue.close()
            store.close()
            book.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _problem_page})
    app.state.store, app.state.config, app.state.specs, app.state.queue = (
        store, config, specs, queue)
    app.state.lock = lock  # held while the process lives
    app.state.plots = {}  # assignment -> (the counting submissions drawn, the PNG)
    app.add_middleware(LimitBody, max_bytes=config.max_upload_kib * 1024 + _FORM_OVERHEAD)
    app.add_middleware(SecurityHeaders)
    return app


async def _problem_page(request: Request, exc: Exception) -> Response:
    """A refusal as a page that says why (a redirect to sign in stays a redirect)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 303:
        return Response(status_code=303, headers=exc.headers)
    headers = dict(exc.headers or {})
    if request.method == "POST":
        # A form refused before its body was read (a visitor signed out, say): closing the
        # connection stops the rest, which would otherwise be read for as long as it is sent.
        headers["connection"] = "close"
    return HTMLResponse(pages.problem(f"Error {exc.status_code}", exc.detail),
                        status_code=exc.status_code, headers=headers)


def serve(data: Path, config_path: Path | None, host: str, port: int,
          cluster: str | None = None) -> None:
    """Run the server until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app = create_app(data, config_path, cluster)
    log.info("serving the course in %s at http://%s:%d/", data.resolve(), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


# The first line of the demo's course.toml, by which --demo knows a folder it made.
_DEMO_HEADER = "# The demo course: the assignments bundled with the grader."
# The demo's people: two students and an instructor.
DEMO_USERS = [("ada", "Ada Lovelace", "student"), ("alan", "Alan Turing", "student"),
              ("prof", "Professor Hopper", "instructor")]


def make_demo(data: Path) -> list[tuple[str, str, str]]:
    """A demo data folder on the bundled course: course.toml (deadline in a week, late credit
    0.8) and a roster; returns (id, role, token) with fresh tokens for its people. ConfigError
    where `data` holds a course that is not a demo."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / CONFIG_NAME
    if config.exists() and not config.read_text(encoding="utf-8").startswith(_DEMO_HEADER):
        # The demo's instructor, with a token printed for anyone reading the terminal or the
        # service's log, would join a real course's roster.
        raise ConfigError(f"{data.resolve()} holds a course that is not the demo: --demo would "
                          "add its people, an instructor among them, to that roster; run the "
                          "demo in another --data folder")
    if not config.exists():
        deadline = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
        config.write_text(
            f"{_DEMO_HEADER}\n"
            "kernels = 2\n\n"
            "[assignments.derivative_calculation]\n"
            f"deadline = {deadline.isoformat().replace('+00:00', 'Z')}\n"
            'late = "multiplier"\nlate_multiplier = 0.8\nsubmissions = 5\nrefill_minutes = 10\n',
            encoding="utf-8")
    store = Store(data / "server.sqlite")
    try:
        return [(user_id, role, store.add_user(user_id, name, role, replace=True))
                for user_id, name, role in DEMO_USERS]
    finally:
        store.close()
