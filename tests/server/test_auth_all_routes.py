"""Every /osire route of the running server refuses requests without Jupyter credentials.

The routes are not listed by hand: the test walks the tornado application's routing table, so a
handler added later without ``@web.authenticated`` fails here. Requests carry a matching XSRF
cookie and header, so what refuses them is authentication, not the XSRF check.
"""
from __future__ import annotations

import re
from typing import Iterator

import aiohttp
import pytest
from tornado import web
from tornado.routing import PathMatches, Rule, RuleRouter
from yarl import URL

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
XSRF = "deadbeefdeadbeef"
_GROUP = re.compile(r"\((?:\?P<\w+>)?(?:[^()\\]|\\.)*\)")


@pytest.fixture
def jp_server_config(tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": {"scheduler": "local", "job_root": str(tmp_path / "jobs"),
                         "db_path": str(tmp_path / "state.sqlite"),
                         "static_endpoints": {"s": {"url": "http://127.0.0.1:9", "api_key": "k"}}}}


def _rules(router: RuleRouter) -> Iterator[Rule]:
    for rule in router.rules:
        if isinstance(rule.target, RuleRouter):
            yield from _rules(rule.target)
        else:
            yield rule


def osire_routes(app: web.Application) -> list[tuple[str, type]]:
    """(concrete path, handler class) for every route whose pattern contains /osire/."""
    routes = []
    for rule in _rules(app.default_router):
        if not isinstance(rule.matcher, PathMatches) or "/osire/" not in rule.matcher.regex.pattern:
            continue
        pattern = rule.matcher.regex.pattern.rstrip("$").replace("/?", "")
        routes.append((_GROUP.sub("x1", pattern), rule.target))
    return routes


def implemented(handler: type) -> list[str]:
    return [m for m in METHODS
            if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())]


async def test_every_osire_route_requires_authentication(jp_serverapp, http_server_client,
                                                         http_server_port):
    routes = osire_routes(jp_serverapp.web_app)
    paths = {path.split("/osire/", 1)[1] for path, _ in routes}
    assert {"api/health", "api/deployments", "v1/models", "v1/x1", "engines/x1/x1"} <= paths
    root = f"http://127.0.0.1:{http_server_port[0].getsockname()[1]}"
    refused, checked = [], 0
    # A fresh connection per request: refusing before the body is read closes the connection.
    async with aiohttp.ClientSession(cookies={"_xsrf": XSRF},
                                     connector=aiohttp.TCPConnector(force_close=True)) as session:
        for path, handler in routes:
            for method in implemented(handler):
                checked += 1
                async with session.request(method, URL(root + path, encoded=True),
                                           headers={"X-XSRFToken": XSRF},
                                           json={"model": "s"}) as resp:
                    if resp.status not in (401, 403):
                        refused.append(f"{method} {path} -> {resp.status}")
    assert checked >= 12
    assert refused == [], "served without authentication: " + ", ".join(refused)


async def test_wrong_token_is_refused_too(jp_serverapp, http_server_client, http_server_port,
                                          jp_base_url):
    url = f"http://127.0.0.1:{http_server_port[0].getsockname()[1]}{jp_base_url}osire/v1/models"
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(url, encoded=True),
                               headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 403
        token = jp_serverapp.identity_provider.token
        async with session.get(URL(url, encoded=True),
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200 and (await resp.json())["data"][0]["id"] == "s"
