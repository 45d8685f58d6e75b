"""The views over HTTP (FastAPI): each authority reads its own view only.

- ``GET /views/{authority}/``: the web page (arrivals and departures, headcounts with a chart,
  alerts, export buttons), refreshed live by polling ``summary.json``;
- ``GET /views/{authority}/summary.json``: key figures and the chart's data;
- ``GET /views/{authority}/{section}.json`` and ``.csv``: one section (``reports.SECTIONS``).

``{authority}`` is ``commune-69123`` (or ``commune:69123``). Credentials: ``Authorization: Bearer
<token>``, or HTTP Basic with the token as password (what a browser uses). No or a wrong
credential: 401; a valid credential of another authority: 403; and nothing else in either answer.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine

from ..infra.reload import Reloaded
from .authority import Authority, UnknownAuthority
from .credentials import CredentialStore
from .export import jsonable, to_csv, to_json
from .reports import SECTIONS, ReadOptions, section, summary

PAGE = Path(__file__).parent / "web" / "view.html"
UNAUTHORISED = {"WWW-Authenticate": 'Basic realm="scolaflux views", charset="UTF-8"'}


class Credentials:
    """The credential file, read again when it changes (rotation without restart), with verified tokens cached."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = Reloaded(path, CredentialStore.load)

    def verify(self, token: str) -> Authority | None:
        """The authority ``token`` belongs to, or None."""
        return self._verified(token, self._file.get())

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one instance per app; keyed by the file as loaded
    def _verified(self, token: str, store: CredentialStore) -> Authority | None:
        return store.verify(token)


def token_of(request: Request) -> str | None:
    """The token of a request: a Bearer token, or the password of HTTP Basic."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        import base64
        import binascii

        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.rpartition(":")[2] or None  # tokens hold no colon; a user name may
    return None


def authorised(authority: str, request: Request) -> Authority:
    """The authority whose view the request may read: 401 without a valid credential, 403 for another's."""
    token = token_of(request)
    holder = request.app.state.credentials.verify(token) if token else None
    if holder is None:
        raise HTTPException(401, "a valid credential is required", headers=UNAUTHORISED)
    try:
        wanted = Authority.parse(authority)
    except UnknownAuthority:
        raise HTTPException(403, "this credential does not open that view") from None
    if wanted != holder:
        raise HTTPException(403, "this credential does not open that view")
    return holder


Owner = Annotated[Authority, Depends(authorised)]


def create_app(
    credentials_path: Path,
    engine_of: Callable[[Authority], Engine],
    options: Callable[[], ReadOptions] = ReadOptions,
) -> FastAPI:
    """The HTTP app over the views that ``engine_of`` opens."""
    app = FastAPI(title="scolaflux views", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.credentials = Credentials(credentials_path)

    def read_options(request: Request) -> ReadOptions:
        base = options()
        params = request.query_params
        try:
            as_of = dt.date.fromisoformat(params["as_of"]) if "as_of" in params else base.as_of
            school_year = int(params["school_year"]) if "school_year" in params else base.school_year
        except ValueError:
            raise HTTPException(422, "as_of must be YYYY-MM-DD and school_year a year") from None
        month = params.get("month", base.month)
        return ReadOptions(as_of, base.lost_pupil_days, school_year, month, base.school_names)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/views/{authority}/", response_class=HTMLResponse)
    def page(owner: Owner) -> HTMLResponse:
        html = PAGE.read_text(encoding="utf-8")
        sections = " ".join(SECTIONS[owner.level])
        html = (
            html.replace("{{authority}}", str(owner)).replace("{{slug}}", owner.slug).replace("{{sections}}", sections)
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/views/{authority}/summary.json")
    def summary_json(owner: Owner, request: Request) -> JSONResponse:
        with engine_of(owner).connect() as conn:
            data = summary(conn, owner, read_options(request))
        return JSONResponse(jsonable(data), headers={"Cache-Control": "no-store"})

    @app.get("/views/{authority}/{name}.{fmt}")
    def section_file(owner: Owner, name: str, fmt: str, request: Request) -> Response:
        if fmt not in ("json", "csv") or name not in SECTIONS[owner.level]:
            raise HTTPException(
                404, f"sections of a {owner.level}: {', '.join(SECTIONS[owner.level])}; as .json or .csv"
            )
        with engine_of(owner).connect() as conn:
            table = section(conn, owner, name, read_options(request))
        if fmt == "json":
            return Response(to_json(table), media_type="application/json")
        separator = request.query_params.get("sep", ";")
        if separator not in (";", ",", "\t"):
            raise HTTPException(422, "sep must be ';', ',' or a tab")
        filename = f"{owner.slug}-{name}.csv"
        return Response(
            to_csv(table, separator),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return app


def engines_by_authority(open_engine: Callable[[Authority], Engine]) -> Callable[[Authority], Engine]:
    """Open each authority's view once, on first use."""
    engines: dict[Authority, Engine] = {}
    lock = threading.Lock()

    def engine_of(authority: Authority) -> Engine:
        with lock:
            if authority not in engines:
                engines[authority] = open_engine(authority)
            return engines[authority]

    return engine_of


__all__ = ["create_app", "engines_by_authority", "token_of"]
