"""A Helm chart repository over HTTP, serving the real Milvus charts in ``sandbox/charts``.

What ``helm repo add`` / ``helm repo update`` / ``helm install --version`` read from a chart
repository: ``GET /index.yaml`` and ``GET /<package>.tgz`` (the index's relative URLs), nothing
else. Unknown paths answer 404 like a static host. ``requests`` records every path served, so a
test can see which chart versions helm downloaded.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from sandbox._http import ThreadedServer

CHARTS = Path(__file__).resolve().parent / "charts"


def chart_path(version: str) -> Path:
    """The packaged real chart ``milvus-<version>.tgz``."""
    path = CHARTS / f"milvus-{version}.tgz"
    if not path.is_file():
        raise FileNotFoundError(f"no vendored Milvus chart {version} in {CHARTS}")
    return path


class ChartRepo:
    def __init__(self, folder: Path = CHARTS) -> None:
        self.folder = folder
        self.requests: list[str] = []
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._server = ThreadedServer(app)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        path = self.folder / name
        if name != path.name or not (name == "index.yaml" or name.endswith(".tgz")) or not path.is_file():
            raise web.HTTPNotFound(text="404 page not found\n")
        kind = "application/x-yaml" if name.endswith(".yaml") else "application/gzip"
        return web.Response(body=path.read_bytes(), content_type=kind)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ChartRepo:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
