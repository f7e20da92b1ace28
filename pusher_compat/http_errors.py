"""Every HTTP error answered the one way the API answers: ``{"error": "...", "code": status}``.

Three places produce errors, and each is covered here: the API's own handlers build them with
:func:`json_error`; aiohttp's router and request reading raise ``HTTPException`` (404, 405 with
``Allow``, 413), which :func:`json_errors` turns into the same JSON; and aiohttp's parser
refuses request heads (oversized or malformed headers) before any handler or middleware runs,
which :class:`JsonErrorRunner` answers in JSON too, logging why without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from . import wire

__all__ = [
    "HttpError", "JsonErrorRunner", "error_body", "json_answer", "json_error", "json_errors",
    "retry_after",
]

log = logging.getLogger("pusher_compat")

_NOT_COPIED = frozenset({"content-type", "content-length"})
"""Headers of an aiohttp error not carried over: they describe its plain-text body."""


def json_error(status: int, message: str,
               headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    """The answer to every failed HTTP request: ``status`` and a JSON body naming the
    problem, plus ``headers`` (``Allow``, ``Retry-After``, ``Sec-WebSocket-Version``)."""
    return web.Response(status=status, body=error_body(status, message),
                        content_type="application/json", headers=CIMultiDict(headers))


def error_body(status: int, message: str) -> bytes:
    """The one error shape as bytes, ``{"error": message, "code": status}``: the body of
    :func:`json_error`, and of the lean transport's refusals
    (:mod:`pusher_compat.api_transport`), which write their responses themselves."""
    return wire.dumps({"error": message, "code": status})


def json_answer(value: Any) -> web.Response:
    """A successful answer: ``value`` as JSON (encoded once, with the wire encoder)."""
    return web.Response(body=wire.dumps(value), content_type="application/json")


class HttpError(Exception):
    """Raised by any handler to answer ``status`` with ``{"error": message, "code": status}``
    and ``headers``: the one error type of every HTTP endpoint (the middleware
    :func:`json_errors` answers it, so handlers need not catch it)."""

    def __init__(self, status: int, message: str,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def response(self) -> web.Response:
        return json_error(self.status, self.message, self.headers)


def retry_after(seconds: float) -> tuple[str, str]:
    """The ``Retry-After`` header for a wait of ``seconds`` (whole seconds, at least 1)."""
    return ("Retry-After", str(max(1, math.ceil(seconds))))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (no route, wrong method, body too large) as JSON; a handler's
    crash as a JSON 500, its traceback logged (that one is a bug)."""
    try:
        return await handler(request)
    except HttpError as error:
        return error.response()
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        headers = [(k, v) for k, v in error.headers.items() if k.lower() not in _NOT_COPIED]
        message = _message(request, error)
        # A missed route is routine (scanners, typos); a refused body or request is news.
        level = logging.DEBUG if error.status in (404, 405) else logging.INFO
        log.log(level, "answered %s %s with %d: %s", request.method, request.path,
                error.status, message)
        return json_error(error.status, message, headers)
    except Exception:
        log.exception("error handling %s %s", request.method, request.path)
        return json_error(500, "Internal server error")


def _message(request: web.Request, error: web.HTTPException) -> str:
    if isinstance(error, web.HTTPNotFound) and error.text == "404: Not Found":
        return f"Unknown path {request.path}"
    if isinstance(error, web.HTTPMethodNotAllowed):
        return (f"Method {request.method} is not allowed on {request.path}: "
                f"use {', '.join(sorted(error.allowed_methods))}")
    text = (error.text or "").strip()
    return text.removeprefix(f"{error.status}: ") or error.reason


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection protocol, answering what its parser refuses in JSON."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            # A crash outside any handler: aiohttp's own logging (with the traceback) and
            # its refusal to answer on a connection where a response already started.
            super().handle_error(request, status, exc, message)
            response = json_error(status, HTTPStatus(status).phrase)
        else:
            status, text = _refusal(exc)
            # Plain HTTP or TLS sent by a scanner is noise: debug, as aiohttp logs it.
            level = logging.DEBUG if isinstance(exc, BadStatusLine) else logging.INFO
            log.log(level, "refused HTTP request from %s: %d %s", request.remote, status, text)
            response = json_error(status, text)
        response.force_close()
        return response


def _refusal(exc: HttpProcessingError) -> tuple[int, str]:
    """Status and message for a request head aiohttp could not parse."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the"
        return 431, f"Request line or header over {limit} bytes"
    text = exc.message.splitlines()[0] if exc.message else "Bad request"
    if "too many headers" in text.lower():
        return 431, text
    return 400, text


class _JsonErrorServer(web.Server):
    """aiohttp's server, making :class:`_JsonErrorHandler` connections."""

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer unparseable requests in JSON."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _JsonErrorServer(made.request_handler, request_factory=made.request_factory,
                                loop=asyncio.get_running_loop(), **made._kwargs)
