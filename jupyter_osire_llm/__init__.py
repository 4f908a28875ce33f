"""jupyter-osire-llm: large language models on HPC clusters, next to your notebooks.

In a notebook or script (the kernel needs only this package and ``openai``)::

    from jupyter_osire_llm import client
    llm = client()          # an openai.OpenAI for this Jupyter server's /osire/v1, token included

``%load_ext jupyter_osire_llm`` adds the ``%osire`` magics. Importing this package imports
nothing of jupyter_server or tornado: the server extension is loaded only by the server.
"""
from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["client", "async_client", "load_ipython_extension", "__version__"]


def client(**kwargs: Any) -> Any:
    """An ``openai.OpenAI`` already pointed at this Jupyter server's ``/osire/v1``, with its token.

    The server is found without a URL or token (see ``jupyter_osire_llm._client.api.discover``);
    keyword arguments go to ``openai.OpenAI``.
    """
    from ._client.api import client as make

    return make(**kwargs)


def async_client(**kwargs: Any) -> Any:
    """An ``openai.AsyncOpenAI`` already pointed at this Jupyter server's ``/osire/v1``."""
    from ._client.api import async_client as make

    return make(**kwargs)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_osire_llm``: the ``%osire`` and ``%%osire chat`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import OsireLLM

    return [{"module": "jupyter_osire_llm", "app": OsireLLM}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-osire-llm"}]
