"""`cfxray study app`: the reading page and its small JSON API (FastAPI on uvicorn).

A page of its own rather than a mode of the Gradio app: Gradio serves images under URLs that
carry file names and keeps component state the page cannot fully control, while a reader
study needs opaque image URLs, whole-page keyboard control, a pausable clock and nothing on
the page the study did not put there. One static page (`page.html`) and four endpoints do
that with nothing hidden:

- `GET  api/study`              names, instructions, captions, item count (never the key)
- `GET  api/readers/{reader}`   the reader's progress and next item
- `POST api/answers`            one answer; 201 and the next item, or 4xx and one line
- `GET  images/{token}.png`     an image of this study, by its random token
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from cfxray.errors import UserError
from cfxray.study.reading import Desk, Refused

PAGE = Path(__file__).with_name("page.html")
MAX_BODY = 4096  # an answer is a few dozen bytes


def build_app(desk: Desk) -> FastAPI:
    app = FastAPI(title=f"cfxray reader study {desk.study.name}", docs_url=None,
                  redoc_url=None, openapi_url=None)
    page = PAGE.read_text()

    @app.exception_handler(Refused)
    def refused(_request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/api/study")
    def study() -> dict[str, Any]:
        return desk.describe()

    @app.get("/api/readers/{reader}")
    def reader(reader: str) -> dict[str, Any]:
        return desk.next(reader)

    @app.post("/api/answers", status_code=201)
    async def answer(request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise Refused(413, f"an answer is at most {MAX_BODY} bytes")
        try:
            payload = json.loads(body)
        except ValueError:
            raise Refused(400, "the answer is not JSON") from None
        return await run_in_threadpool(desk.answer, payload)

    @app.get("/images/{name}")
    def image(name: str) -> FileResponse:
        path = desk.study.image_file(name.removesuffix(".png")) if name.endswith(".png") \
            else None
        if path is None:
            raise Refused(404, "no such image in this study")
        return FileResponse(path, media_type="image/png")

    return app


@dataclass
class Running:
    """A page served from a background thread (tests, screenshots); `close()` stops it."""

    url: str
    server: Any
    thread: threading.Thread
    desk: Desk

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.desk.store.close()


def launch(study_dir: str | Path, database: str, host: str = "127.0.0.1", port: int = 7870,
           block: bool = True) -> Running | None:
    import uvicorn

    from cfxray.study.definition import load_study
    from cfxray.study.store import AnswerStore

    desk = Desk(load_study(study_dir), AnswerStore(database))
    config = uvicorn.Config(build_app(desk), host=host, port=port, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{host}:{port}/"
    if block:
        print(f"reader study {desk.study.name} ({len(desk.study.items)} items, content sha256 "
              f"{desk.study.sha256[:12]}) at {url}\nanswers: {desk.store.url}\nCtrl-C stops.",
              flush=True)
        server.run()
        desk.store.close()
        return None
    thread = threading.Thread(target=server.run, name="cfxray-study-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UserError(f"the reading page could not start on {host}:{port}")
        time.sleep(0.05)
    return Running(url, server, thread, desk)
