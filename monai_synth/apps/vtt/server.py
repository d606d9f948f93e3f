"""The reader-study web app: Starlette routes, Jinja2 pages, and a uvicorn server that binds to 127.0.0.1 by default.

Routes (every URL holds opaque random tokens only, never a path, a file name or an index):

============================  ==========================================================================================
``GET /``                     name form (start or resume)
``POST /start``               name -> the reader (created with an order of the study set, or found) -> session cookie
``GET /read``                 the reader's next unanswered image, or the end page
``POST /answer``              one answer, committed before the reply; then the next image (Post/Redirect/Get)
``POST /stop``                end the session (answers stay; the same name resumes)
``GET /image/{token}``        the image as PNG, default window or ``?wc=<center>&ww=<width>``
``GET /admin?token=...``      progress per reader (the token is printed at start-up)
============================  ==========================================================================================

CSRF: the start form carries the value of a cookie set with it (double submit); every later form carries the
session's own random token, checked against the database. Cookies are ``HttpOnly`` and ``SameSite=Strict``.
Every reply has ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer`` and a Content-Security-Policy that
allows only this server's own scripts, styles, images and forms.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from monai_synth.apps.vtt.db import StudyDB, UnknownItemError
from monai_synth.apps.vtt.render import DisplayImageCache, render_png
from monai_synth.apps.vtt.sequence import new_token
from monai_synth.apps.vtt.validation import (
    CONFIDENCE_LEVELS,
    NAME_MAX_LENGTH,
    InputError,
    parse_answer,
    parse_confidence,
    parse_lesion,
    parse_reader_name,
    parse_window,
)
from monai_synth.transforms import WINDOW_PRESETS

__all__ = ["SESSION_COOKIE", "START_COOKIE", "StudyServer", "create_app"]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "vtt_session"
START_COOKIE = "vtt_start"
MAX_FORM_BYTES = 4096
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
_PRESETS = [(str(p.value).replace("_", " "), level, width) for p, (level, width) in WINDOW_PRESETS.items()]


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a token sent by a browser (any text) with the expected one."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class SecurityHeadersMiddleware:
    """ASGI middleware adding the headers above to every HTTP reply (pages, images, static files, errors)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in _SECURITY_HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Routes:
    """The endpoints, sharing the database, the templates, the image cache and the admin token."""

    def __init__(self, db: StudyDB, admin_token: str, cache_size: int) -> None:
        self.db = db
        self.admin_token = admin_token
        self.cache = DisplayImageCache(cache_size)
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("monai_synth.apps.vtt", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.templates = Jinja2Templates(env=env)
        self.ask_lesion = db.ask_lesion
        self.n_items = len(db.items())

    # ------------------------------------------------------------------------------------------ helpers
    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    async def form(self, request: Request) -> dict[str, str]:
        length = request.headers.get("content-length")
        if length is None or not length.isdecimal() or int(length) > MAX_FORM_BYTES:
            raise HTTPException(413, f"a form of at most {MAX_FORM_BYTES} bytes is expected.")
        form = await request.form(max_files=0, max_fields=16)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def session(self, request: Request):
        return await run_in_threadpool(self.db.session, request.cookies.get(SESSION_COOKIE))

    async def checked_session(self, request: Request, form: dict[str, str]):
        """The session of a POST, with its CSRF form token checked (403 otherwise)."""
        session = await self.session(request)
        if session is None:
            raise HTTPException(403, "your session has ended; enter your name again to resume where you stopped.")
        if not _same(form.get("csrf", ""), session.csrf):
            raise HTTPException(403, "the form's security token is missing or wrong; reload the page and try again.")
        return session

    # ------------------------------------------------------------------------------------------ reader pages
    async def start_page(self, request: Request) -> Response:
        session = await self.session(request)
        csrf = new_token()
        response = self.page(
            request, "start.html", csrf=csrf, n_items=self.n_items, name_max=NAME_MAX_LENGTH,
            current=session.reader_name if session else None, error=None,
        )  # fmt: skip
        response.set_cookie(START_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    async def start(self, request: Request) -> Response:
        form = await self.form(request)
        cookie = request.cookies.get(START_COOKIE, "")
        if not cookie or not _same(form.get("csrf", ""), cookie):
            raise HTTPException(403, "the start form's security token is missing or wrong; allow cookies and reload.")
        try:
            name = parse_reader_name(form.get("name"))
        except InputError as e:
            response = self.page(request, "start.html", 400, csrf=cookie, n_items=self.n_items,
                                 name_max=NAME_MAX_LENGTH, current=None, error=str(e))  # fmt: skip
            return response
        reader_id = await run_in_threadpool(self.db.reader_for_name, name)
        token, _ = await run_in_threadpool(self.db.create_session, reader_id)
        response = RedirectResponse("/read", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/")
        response.delete_cookie(START_COOKIE, path="/")
        return response

    async def read_page(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        item = await run_in_threadpool(self.db.next_item, session.reader_id)
        if item is None:
            answered, total = await run_in_threadpool(self.db.progress_of, session.reader_id)
            return self.page(request, "done.html", name=session.reader_name, answered=answered, total=total,
                             csrf=session.csrf)  # fmt: skip
        return self.page(
            request, "read.html", name=session.reader_name, token=item.token, answered=item.answered,
            total=item.total, csrf=session.csrf, ask_lesion=self.ask_lesion, confidences=CONFIDENCE_LEVELS,
            presets=_PRESETS,
        )  # fmt: skip

    async def answer(self, request: Request) -> Response:
        form = await self.form(request)
        session = await self.checked_session(request, form)
        token = form.get("item", "")
        answer = parse_answer(form.get("answer"))
        confidence = parse_confidence(form.get("confidence"))
        lesion = parse_lesion(form.get("lesion"), self.ask_lesion)
        window = parse_window(form.get("window_center"), form.get("window_width"))
        try:
            await run_in_threadpool(self.db.record_answer, session.reader_id, token, answer, confidence, lesion, window)
        except UnknownItemError:
            raise HTTPException(404, "this image is not part of your reading list.") from None
        return RedirectResponse("/read", status_code=303)

    async def stop(self, request: Request) -> Response:
        form = await self.form(request)
        session = await self.checked_session(request, form)
        await run_in_threadpool(self.db.end_session, request.cookies.get(SESSION_COOKIE, ""))
        answered, total = await run_in_threadpool(self.db.progress_of, session.reader_id)
        response = self.page(request, "stopped.html", name=session.reader_name, answered=answered, total=total)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def image(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            raise HTTPException(403, "enter your name first.")
        window = parse_window(request.query_params.get("wc"), request.query_params.get("ww"))
        try:
            item_id, path = await run_in_threadpool(self.db.item_path, session.reader_id, request.path_params["token"])
        except UnknownItemError:
            raise HTTPException(404, "no such image.") from None
        try:
            image = await run_in_threadpool(self.cache.get, item_id, path)
            content = await run_in_threadpool(render_png, image, window)
        except Exception:
            logger.exception("cannot render study item %d (%s)", item_id, path)  # the server log names the file
            raise HTTPException(500, "this image cannot be shown; tell the study administrator.") from None
        return Response(content, media_type="image/png")

    # ------------------------------------------------------------------------------------------ admin
    async def admin(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not token or not _same(token, self.admin_token):
            raise HTTPException(403, "the admin page needs the token printed when the server started.")
        readers = await run_in_threadpool(self.db.progress)
        return self.page(request, "admin.html", readers=readers, n_items=self.n_items, ask_lesion=self.ask_lesion)

    # ------------------------------------------------------------------------------------------ errors
    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "unexpected error."
        return self.page(request, "error.html", status, status=status, message=detail)

    async def input_error(self, request: Request, exc: Exception) -> Response:
        return self.page(request, "error.html", 400, status=400, message=str(exc))


def create_app(db: StudyDB, admin_token: str, cache_size: int = 16) -> Starlette:
    """The Starlette app of a study.

    Args:
        db: the study database (:func:`~monai_synth.apps.vtt.study.open_study`).
        admin_token: the secret of ``/admin?token=...``.
        cache_size: decoded images kept in memory.
    """
    if len(admin_token) < 16:
        raise ValueError("`admin_token` must be at least 16 characters (use monai_synth.apps.vtt.sequence.new_token).")
    r = _Routes(db, admin_token, cache_size)
    routes = [
        Route("/", r.start_page, methods=["GET"]),
        Route("/start", r.start, methods=["POST"]),
        Route("/read", r.read_page, methods=["GET"]),
        Route("/answer", r.answer, methods=["POST"]),
        Route("/stop", r.stop, methods=["POST"]),
        Route("/image/{token}", r.image, methods=["GET"]),
        Route("/admin", r.admin, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("monai_synth.apps.vtt", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: r.http_error, InputError: r.input_error, Exception: r.http_error},
    )
    app.add_middleware(SecurityHeadersMiddleware)
    return app


class StudyServer:
    """uvicorn serving an app on a socket bound at construction (so ``port=0`` gets a free port known up front).

    Args:
        app: the ASGI app.
        host: address to bind; ``127.0.0.1`` (this machine only) unless readers come from the network.
        port: TCP port; 0 picks a free one.
        log_level: uvicorn's log level.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, int(port)))
            self.socket.listen(128)  # connections made before uvicorn starts wait in the backlog
        except OSError as e:
            self.socket.close()
            raise OSError(f"cannot listen on {host}:{port} ({e}); choose another --port or --host.") from e
        self.host, self.port = host, int(self.socket.getsockname()[1])
        config = uvicorn.Config(app, log_level=log_level, server_header=False, date_header=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C)."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 20.0) -> StudyServer:
        """Serve in a background thread; returns once the server accepts connections.

        Raises:
            TimeoutError: it did not start within ``timeout`` seconds.
        """
        self._thread = threading.Thread(target=self.run, name="vtt-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"the study server did not start within {timeout:g} s.")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start` (bounded wait)."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.socket.close()
