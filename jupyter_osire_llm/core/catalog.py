"""The site catalog: which models users may launch, on which engine, with which defaults.

A broken entry is reported (one message per bad entry) and skipped; the good entries still load.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..errors import ConfigError, NotFound, RequestError
from ..schedulers.base import Resources
from .limits import parse_resources

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}", re.ASCII)
_ARG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
ENGINE_KINDS = ("vllm", "openai")   # vllm: derive vLLM args; openai: any OpenAI-style server
#: When a started replica counts as ready: after a real one-token completion (engines can answer
#: /health and hang on the first request), or on /health alone (embedding-only engines).
READINESS = ("completion", "health")
_FLAG = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
#: The flags that give an engine its model, the name it answers to, and where it listens (vLLM's
#: and SGLang's spelling; llama.cpp's llama-server: -m, --alias, --host, --port).
ARG_FLAGS = {"model_flag": "--model", "name_flag": "--served-model-name", "host_flag": "--host",
             "port_flag": "--port"}
#: How the ranks of a replica across nodes join (``distributed``): ``mp``, vLLM's own multi-node
#: launch (a headless ``vllm serve`` per other node); ``ray``, a Ray cluster the job starts
#: (head on rank 0's node, a Ray node per other node) on which vLLM places its workers.
DISTRIBUTED = ("mp", "ray")
#: How vLLM takes its key and its certificate (uvicorn's flags), and where a batch's engine
#: listens on a Unix socket instead of a port (``--uds``).
VLLM_DEFAULTS = {"key_env": "VLLM_API_KEY", "tls_cert_flag": "--ssl-certfile",
                 "tls_key_flag": "--ssl-keyfile", "uds_flag": "--uds"}


@dataclass(frozen=True)
class Engine:
    name: str
    command: str                       # shell words, admin-controlled
    kind: str = "vllm"
    setup: str = ""                    # shell lines run before the engine (module load, venv)
    env: Mapping[str, str] = field(default_factory=dict)
    template: str = "engine.sh.j2"
    guard: bool = True                 # load engine_guard (vLLM --middleware) to key every route
    key_env: str = ""                  # the engine reads its key from this variable...
    key_file_flag: str = ""            # ...or from the file this flag names (never argv)
    tls_cert_flag: str = ""            # flags giving the engine its per-job certificate and key
    tls_key_flag: str = ""
    uds_flag: str = ""                 # a batch's engine listens on this Unix socket (no port)
    insecure: bool = False             # the admin accepts an engine without key or TLS
    readiness: str = "completion"      # see READINESS
    model_flag: str = "--model"        # "": the model path is the first argument
    name_flag: str = "--served-model-name"   # "": the engine answers to any model name
    host_flag: str = "--host"
    port_flag: str = "--port"
    worker_command: str = ""           # ranks 1.. of a multi-node replica ("": command)
    distributed: str = "mp"            # how a multi-node replica's ranks join: see DISTRIBUTED

    @property
    def multi_node(self) -> bool:
        """Whether one replica may span nodes (vLLM's multi-node launch)."""
        return self.kind == "vllm"

    @property
    def reserved_flags(self) -> set[str]:
        """Flags the job sets itself; ``engine_args`` may not set them again."""
        return {f for f in (self.model_flag, self.name_flag, self.host_flag, self.port_flag,
                            self.uds_flag) if f}

    @property
    def weaknesses(self) -> list[str]:
        """What protection this engine lacks (empty for a keyed engine behind pinned TLS)."""
        out = []
        if not (self.key_env or self.key_file_flag):
            out.append("no key: anyone who reaches its port can use it")
        if not (self.tls_cert_flag and self.tls_key_flag):
            out.append("no TLS: prompts and answers cross the network in clear")
        return out


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model: str
    engine: Engine
    description: str = ""
    resources: Resources = field(default_factory=Resources)
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    setup: str = ""
    idle_timeout: Optional[float] = None   # seconds; None: the site's (idle_timeout); 0: never
    pinned: bool = False                   # exempt from idle shutdown
    startup_timeout: Optional[float] = None  # seconds a running job may take to become ready;
    #                                          None: the site's (startup_timeout)

    def public(self) -> dict[str, Any]:
        """What users see: no engine internals, env or setup lines."""
        doc: dict[str, Any] = {"name": self.name, "model": self.model,
                               "engine": self.engine.name,
               "description": self.description,
               "resources": {k: v for k, v in vars(self.resources).items() if v is not None}}
        if self.idle_timeout is not None:
            doc["idle_timeout"] = self.idle_timeout
        if self.pinned:
            doc["pinned"] = True
        if self.startup_timeout is not None:
            doc["startup_timeout"] = self.startup_timeout
        if self.engine.weaknesses:
            doc["insecure"] = self.engine.weaknesses
        return doc


@dataclass
class Catalog:
    models: dict[str, ModelEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: str = ""

    def get(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model {name!r} is not in the catalog; known models: {known}",
                           field="model") from None

    def public(self) -> list[dict[str, Any]]:
        return [entry.public() for entry in self.models.values()]

    def insecure(self) -> dict[str, list[str]]:
        """Models whose engine the admin marked insecure, and what each lacks."""
        return {name: entry.engine.weaknesses for name, entry in self.models.items()
                if entry.engine.weaknesses}


def load_catalog(path: Optional[str]) -> Catalog:
    """Load the catalog YAML; a missing or unreadable file is a ConfigError."""
    if not path:
        return Catalog(problems=["no catalog configured (c.OsireLLM.catalog)"], source="")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"catalog {path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"catalog {path}: not valid YAML: {exc}") from exc
    catalog = parse_catalog(raw or {})
    catalog.source = str(path)
    return catalog


def parse_catalog(raw: Any) -> Catalog:
    if not isinstance(raw, Mapping):
        raise ConfigError("catalog: the top level must be a mapping with 'models' and 'engines'")
    catalog = Catalog()
    engines = _parse_engines(raw.get("engines") or {}, catalog.problems)
    models = raw.get("models") or []
    if not isinstance(models, list):
        raise ConfigError("catalog: 'models' must be a list")
    for index, item in enumerate(models):
        label = item.get("name", f"#{index}") if isinstance(item, Mapping) else f"#{index}"
        try:
            entry = _parse_model(item, engines)
        except (RequestError, ValueError, TypeError) as exc:
            catalog.problems.append(f"models[{index}] ({label}): {_message(exc)}")
            continue
        if entry.name in catalog.models:
            catalog.problems.append(f"models[{index}] ({label}): duplicate name, entry skipped")
            continue
        catalog.models[entry.name] = entry
    return catalog


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, RequestError) else str(exc)


def _parse_engines(raw: Any, problems: list[str]) -> dict[str, Engine]:
    if not isinstance(raw, Mapping):
        problems.append("engines: must be a mapping of name -> engine")
        return {}
    engines = {}
    for name, spec in raw.items():
        try:
            engines[name] = _parse_engine(str(name), spec)
        except ValueError as exc:
            problems.append(f"engines.{name}: {exc}")
    return engines


def _parse_engine(name: str, spec: Any) -> Engine:
    if not isinstance(spec, Mapping):
        raise ValueError("must be a mapping with at least 'command'")
    _no_unknown(spec, {"command", "kind", "setup", "env", "template", "guard", "key_env",
                       "key_file_flag", "tls_cert_flag", "tls_key_flag", "uds_flag", "insecure",
                       "readiness", "worker_command", "distributed", *ARG_FLAGS})
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip() or "\n" in command:
        raise ValueError("'command' must be one line of shell words")
    kind = spec.get("kind", "vllm")
    if kind not in ENGINE_KINDS:
        raise ValueError(f"'kind' must be one of {', '.join(ENGINE_KINDS)}, got {kind!r}")
    readiness = spec.get("readiness", "completion")
    if readiness not in READINESS:
        raise ValueError(f"'readiness' must be one of {', '.join(READINESS)}, got {readiness!r}")
    defaults = VLLM_DEFAULTS if kind == "vllm" else {}
    protection = {name: _flag_or_name(spec, name, defaults.get(name, "")) for name in
                  ("key_env", "key_file_flag", "tls_cert_flag", "tls_key_flag", "uds_flag")}
    arguments = {flag: _flag_or_name(spec, flag, default) for flag, default in ARG_FLAGS.items()}
    for needed in ("host_flag", "port_flag"):
        if not arguments[needed]:
            raise ValueError(f"'{needed}' cannot be empty: the job must tell the engine where "
                             "to listen")
    worker = spec.get("worker_command", "")
    if not isinstance(worker, str) or "\n" in worker:
        raise ValueError("'worker_command' must be one line of shell words")
    distributed = spec.get("distributed", "mp")
    if distributed not in DISTRIBUTED:
        raise ValueError(f"'distributed' must be one of {', '.join(DISTRIBUTED)}, "
                         f"got {distributed!r}")
    engine = Engine(name=name, command=command.strip(), kind=kind, setup=_text(spec, "setup"),
                    worker_command=worker.strip(), distributed=distributed,
                    env=_env(spec.get("env")), template=str(spec.get("template", "engine.sh.j2")),
                    guard=bool(spec.get("guard", kind == "vllm")),
                    insecure=spec.get("insecure", False) is True, readiness=readiness,
                    **protection, **arguments)
    if bool(engine.tls_cert_flag) != bool(engine.tls_key_flag):
        raise ValueError("'tls_cert_flag' and 'tls_key_flag' go together")
    if engine.weaknesses and not engine.insecure:
        raise ValueError(f"{'; '.join(engine.weaknesses)}. Say how it takes its key "
                         "('key_env' or 'key_file_flag') and its certificate ('tls_cert_flag', "
                         "'tls_key_flag'), or mark it 'insecure: true' to run it anyway")
    return engine


def _flag_or_name(spec: Mapping[str, Any], name: str, default: str) -> str:
    """``key_env`` is a variable name; the others are command-line flags (``--ssl-certfile``)."""
    value = spec.get(name, default)
    if value in (None, "", False):
        return ""
    pattern = _ENV_NAME if name == "key_env" else _FLAG
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{name!r} {value!r} is not a valid "
                         f"{'variable name' if name == 'key_env' else 'command-line flag'}")
    return value


def _parse_model(item: Any, engines: Mapping[str, Engine]) -> ModelEntry:
    if not isinstance(item, Mapping):
        raise ValueError("must be a mapping")
    _no_unknown(item, {"name", "model", "engine", "description", "resources", "engine_args",
                       "env", "setup", "idle_timeout", "pinned", "startup_timeout"})
    name = item.get("name")
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ValueError(f"'name' {name!r} must be 1-128 of letters, digits, '_.:/-'")
    model = item.get("model")
    if not isinstance(model, str) or not model.strip() or not model.isprintable():
        raise ValueError("'model' must be a path or hub id")
    idle_timeout = item.get("idle_timeout")
    if idle_timeout is not None and (isinstance(idle_timeout, bool) or
                                     not isinstance(idle_timeout, (int, float)) or
                                     idle_timeout < 0):
        raise ValueError(f"'idle_timeout' must be seconds (0: never), got {idle_timeout!r}")
    if not isinstance(item.get("pinned", False), bool):
        raise ValueError("'pinned' must be true or false")
    startup_timeout = item.get("startup_timeout")
    if startup_timeout is not None and (isinstance(startup_timeout, bool) or
                                        not isinstance(startup_timeout, (int, float)) or
                                        startup_timeout <= 0):
        raise ValueError(f"'startup_timeout' must be seconds, more than 0 (a replica not ready "
                         f"by then is stopped), got {startup_timeout!r}")
    engine_name = item.get("engine", "vllm")
    if engine_name not in engines:
        raise ValueError(f"engine {engine_name!r} is not defined under 'engines'")
    return ModelEntry(name=name, model=model, engine=engines[engine_name],
                      description=str(item.get("description", "")),
                      resources=parse_resources(item.get("resources")),
                      engine_args=_engine_args(item.get("engine_args")),
                      env=_env(item.get("env")), setup=_text(item, "setup"),
                      idle_timeout=None if idle_timeout is None else float(idle_timeout),
                      pinned=item.get("pinned", False),
                      startup_timeout=None if startup_timeout is None else float(startup_timeout))


def _engine_args(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("'engine_args' must be a mapping of flag -> value")
    for key, value in raw.items():
        if not _ARG_NAME.fullmatch(str(key)):
            raise ValueError(f"engine_args: {key!r} is not a flag name")
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise ValueError(f"engine_args.{key}: must be a scalar, got {type(value).__name__}")
        _one_line(f"engine_args.{key}", str(value))
    return dict(raw)


def _env(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("'env' must be a mapping of NAME -> value")
    for key in raw:
        if not _ENV_NAME.fullmatch(str(key)):
            raise ValueError(f"env: {key!r} is not an environment variable name")
        _one_line(f"env.{key}", str(raw[key]))
    return {str(k): str(v) for k, v in raw.items()}


def _one_line(where: str, value: str) -> None:
    if not value.isprintable():
        raise ValueError(f"{where}: control characters (newlines, tabs...) are not allowed")


def _text(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text")
    return value


def _no_unknown(spec: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known))}")

