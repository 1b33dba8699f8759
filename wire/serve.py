"""Go's ``ipn.ServeConfig`` (Serve's JSON) and the sans-IO decisions Serve makes on it.

The models carry Go's field names and Go's JSON (``to_go_json``: struct order, omitempty, map keys
sorted, as ``encoding/json``), so a config written by Go's ``tailscale serve`` reads here and the
``ETag`` (sha256 of that JSON, Go ``generateServeConfigETag``) is the same bytes Go would hash. The
rest is the decisions of Go's ``ipn/ipnlocal/serve.go``, with no I/O: which handler a request's path
selects (``match_web``, Go ``getServeHandler``: exact mount, then each parent with and without its
trailing slash, longest first), the Web key a request is looked up under (``web_key``), a Redirect's
status and expansion (``parse_redirect``, ``expand_redirect``), a Proxy argument's URL
(``expand_proxy_arg``), the file a Path handler serves (``path_target``, ``..`` refused as Go's
``http.FileServer``), and the validation a config must pass before it is applied (``validate``,
``validate_update``: Go's rules plus the ones that make a config servable here). Every refusal is one
typed ``ServeConfigError``.

Fields as in Go at the newest tag read (v1.103.0-pre: ``ProxyProtocol``, ``Redirect``,
``AcceptAppCaps``, which v1.90.9 lacks). ``Services`` (``"svc:web"`` → ``ServiceConfig``, what the
node serves on a Tailscale Service's VIP, Go's ``ListenService``) are checked as the node's own ports
(plus Go's service rules: a valid ``svc:`` name, ``Tun`` never with handlers); ``service_slice`` is one
service port's part. ``Tun`` (L3 service forwarding) and ``Foreground`` (the CLI's session configs)
are refused here until they are served, so nothing configured is silently ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from pytsnet.wire.errors import ParseError

__all__ = ["HTTPHandler", "ServeConfig", "ServeConfigError", "ServeType", "ServiceConfig", "TCPPortHandler",
           "WebServerConfig", "etag", "expand_proxy_arg", "expand_redirect", "funnel_ports", "funnel_targets",
           "ingress_flags", "match_web", "parse_redirect",
           "parse_serve_config", "path_target", "port_slice", "serve_type", "service_slice",
           "split_host_port", "strip_mount", "to_go_json", "validate", "validate_update", "web_key"]

MAX_CONFIG = 1 << 20
"""A serve config past 1 MiB of JSON is refused: real ones are a few hundred bytes."""

ServeType = Literal["https", "http", "tcp", "tls-terminated-tcp"]


class ServeConfigError(ParseError):
    """A serve config that cannot be read or served (bad JSON, a bad field, a conflict with the one
    in force); the message says which part and why, in Go's words where Go has them."""


class _GoModel(BaseModel):
    """Frozen, unknown fields refused, Go's names; omitempty fields default to their zero."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)


Port = Annotated[int, Field(ge=1, le=65535)]


class HTTPHandler(_GoModel):
    """Exactly one of ``Path``, ``Proxy``, ``Text``, ``Redirect`` (``validate`` checks)."""

    Path: StrictStr = ""
    """Absolute path of a file or directory to serve."""
    Proxy: StrictStr = ""
    """``http://localhost:3000/``, ``localhost:3030`` or ``3030`` (``expand_proxy_arg``)."""
    Text: StrictStr = ""
    AcceptAppCaps: list[StrictStr] = []
    """Peer capabilities forwarded in ``Tailscale-App-Capabilities``: refused here (no grants yet)."""
    Redirect: StrictStr = ""
    """``[<3xx>:]<URL>``, with ``${HOST}`` and ``${REQUEST_URI}`` expanded."""


class WebServerConfig(_GoModel):
    Handlers: dict[StrictStr, HTTPHandler] = {}
    """Mount point (``/``, ``/foo``, ``/foo/``) → handler."""


class TCPPortHandler(_GoModel):
    HTTPS: StrictBool = False
    HTTP: StrictBool = False
    TCPForward: StrictStr = ""
    """``host:port`` the connection is forwarded to (``unix:`` paths are refused here)."""
    TerminateTLS: StrictStr = ""
    """With ``TCPForward``: terminate TLS first, with a certificate for this name."""
    ProxyProtocol: StrictInt = 0
    """PROXY protocol version sent to ``TCPForward`` (0: none): refused here, not yet sent."""


class ServiceConfig(_GoModel):
    TCP: dict[Port, TCPPortHandler] = {}
    Web: dict[StrictStr, WebServerConfig] = {}
    Tun: StrictBool = False


class ServeConfig(_GoModel):
    TCP: dict[Port, TCPPortHandler] = {}
    """Tailnet TCP port → what to do with its connections."""
    Web: dict[StrictStr, WebServerConfig] = {}
    """``"<fqdn>:<port>"`` → that web server's handlers."""
    Services: dict[StrictStr, ServiceConfig] = {}
    AllowFunnel: dict[StrictStr, StrictBool] = {}
    Foreground: dict[StrictStr, ServeConfig] = {}


# -- JSON --------------------------------------------------------------------------------------------------
def parse_serve_config(data: bytes | str) -> ServeConfig | None:
    """Go's JSON → a config (``null`` or empty → None, Go's nil config); ``ServeConfigError`` else."""
    if len(data) > MAX_CONFIG:
        raise ServeConfigError(f"serve config is {len(data)} bytes, over the {MAX_CONFIG} limit")
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not text.strip() or text.strip() == "null":
        return None
    try:
        return ServeConfig.model_validate_json(text)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ServeConfigError(f"invalid serve config: {where}: {err['msg']}") from None


def _go_value(v: Any) -> Any:
    """Go's encoding of a model: fields in declaration order, zero values left out (omitempty)."""
    if isinstance(v, BaseModel):
        out: dict[str, Any] = {}
        for name in type(v).model_fields:
            val = getattr(v, name)
            if val in ("", 0, False, [], {}, None):
                continue
            out[name] = _go_value(val)
        return out
    if isinstance(v, dict):  # Go sorts map keys by their text (integer keys too)
        return {str(k): _go_value(v[k]) for k in sorted(v, key=str)}
    if isinstance(v, list):
        return [_go_value(x) for x in v]
    return v


def to_go_json(cfg: ServeConfig | None) -> bytes:
    """``json.Marshal(cfg)`` as Go writes it (compact); a nil config is ``null``."""
    if cfg is None:
        return b"null"
    return json.dumps(_go_value(cfg), separators=(",", ":"), ensure_ascii=False).encode()


def etag(cfg: ServeConfig | None) -> str:
    """Go ``generateServeConfigETag``: hex sha256 of the config's JSON."""
    return hashlib.sha256(to_go_json(cfg)).hexdigest()


# -- validation ----------------------------------------------------------------------------------------------
def serve_type(h: TCPPortHandler) -> ServeType | None:
    """Go ``serveTypeFromPortHandler``."""
    if h.HTTP:
        return "http"
    if h.HTTPS:
        return "https"
    if h.TerminateTLS:
        return "tls-terminated-tcp"
    if h.TCPForward:
        return "tcp"
    return None


def split_host_port(hp: str) -> tuple[str, int]:
    """Go ``net.SplitHostPort`` + a numeric port (``HostPort.Port``); ``ServeConfigError`` else."""
    host, sep, port = hp.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServeConfigError(f"{hp!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ServeConfigError(f"{hp!r}: an IPv6 host needs brackets")
    return host, int(port)


def _check_handler(key: str, mount: str, h: HTTPHandler, prefix: str = "") -> None:
    where = f"{prefix}Web[{key!r}].Handlers[{mount!r}]"
    if not mount.startswith("/"):
        raise ServeConfigError(f"{where}: mount point must start with '/'")
    if any(seg in (".", "..") for seg in mount.split("/")):
        raise ServeConfigError(f"{where}: mount point must be a clean path")
    kinds = [k for k in ("Path", "Proxy", "Text", "Redirect") if getattr(h, k)]
    if len(kinds) != 1:
        raise ServeConfigError(f"{where}: exactly one of Path, Proxy, Text, Redirect must be set "
                               f"(got {', '.join(kinds) or 'none'})")
    if h.AcceptAppCaps:
        raise ServeConfigError(f"{where}: AcceptAppCaps is not supported by this node")
    if h.Path and not h.Path.startswith("/"):
        raise ServeConfigError(f"{where}: Path must be absolute")
    if h.Proxy:
        url, _ = expand_proxy_arg(h.Proxy)
        if url.startswith("unix:"):
            raise ServeConfigError(f"{where}: unix socket backends are not supported by this node")
        scheme, _, rest = url.partition("://")
        hostport = rest.split("/", 1)[0]
        if scheme not in ("http", "https") or not hostport:
            raise ServeConfigError(f"{where}: Proxy {h.Proxy!r} is not a URL, host:port or port")
        if ":" in hostport.rsplit("]", 1)[-1]:
            split_host_port(hostport)
    if h.Redirect:
        _, target = parse_redirect(h.Redirect)
        if not target:
            raise ServeConfigError(f"{where}: empty Redirect target")


def validate(cfg: ServeConfig | None) -> None:
    """What a config must be to be served here; ``ServeConfigError`` naming the first bad part."""
    if cfg is None:
        return
    if cfg.Foreground:
        raise ServeConfigError("Foreground session configs are not supported by this node")
    _check_web_and_tcp(cfg.Web, cfg.TCP, "")
    for key in cfg.AllowFunnel:
        split_host_port(key)
    for name, svc in cfg.Services.items():
        _check_service(name, svc)


def _check_web_and_tcp(web: dict[str, WebServerConfig], tcp: dict[int, TCPPortHandler], where: str) -> None:
    for key, w in web.items():
        split_host_port(key)
        for mount, h in w.Handlers.items():
            _check_handler(key, mount, h, where)
    for port, th in tcp.items():
        _check_port_handler(port, th, where)


_SERVICE_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_service(name: str, svc: ServiceConfig) -> None:
    """Go ``tailcfg.ServiceName.Validate`` on the key, Go's Tun rule, then the handlers as the node's."""
    if not name.startswith("svc:") or not _SERVICE_LABEL.match(name[4:]):
        raise ServeConfigError(f"Services[{name!r}]: not a valid service name ('svc:' and a DNS label)")
    if svc.Tun and (svc.TCP or svc.Web):
        raise ServeConfigError("cannot configure TUN mode in combination with TCP or web handlers for "
                               f"{name}")
    if svc.Tun:
        raise ServeConfigError(f"Services[{name!r}]: TUN mode is not supported by this node")
    _check_web_and_tcp(svc.Web, svc.TCP, f"Services[{name!r}].")


def _check_port_handler(port: int, h: TCPPortHandler, prefix: str = "") -> None:
    where = f"{prefix}TCP[{port}]"
    modes = [m for m, on in (("HTTPS", h.HTTPS), ("HTTP", h.HTTP), ("TCPForward", bool(h.TCPForward)))
             if on]
    if len(modes) != 1:
        raise ServeConfigError(f"{where}: exactly one of HTTPS, HTTP, TCPForward must be set "
                               f"(got {', '.join(modes) or 'none'})")
    if h.TerminateTLS and not h.TCPForward:
        raise ServeConfigError(f"{where}: TerminateTLS is only used with TCPForward")
    if h.ProxyProtocol and not h.TCPForward:  # 20h: Go's CLI rules (serve_v2.go)
        raise ServeConfigError(f"{where}: PROXY protocol is only supported for TCP forwarding, "
                               "not HTTP/HTTPS")
    if h.ProxyProtocol not in (0, 1, 2):
        raise ServeConfigError(f"{where}: invalid PROXY protocol version {h.ProxyProtocol}; must be 1 or 2")
    if h.TCPForward:
        if h.TCPForward.startswith("unix:"):
            raise ServeConfigError(f"{where}: unix socket targets are not supported by this node")
        split_host_port(h.TCPForward)


def validate_update(existing: ServeConfig | None, incoming: ServeConfig | None) -> None:
    """Go ``validateServeConfigUpdate``: a port keeps its serve type (remove it first to change it)."""
    validate(incoming)
    if existing is None or incoming is None:
        return
    for port, h in incoming.TCP.items():
        old = existing.TCP.get(port)
        if old is None:
            continue
        was, now = serve_type(old), serve_type(h)
        if was != now:
            raise ServeConfigError(f"want to serve {now!r}, but port {port} is already serving {was!r}")
    for name, svc in incoming.Services.items():  # Go's "Validations for Tailscale Services"
        old_svc = existing.Services.get(name)
        if old_svc is None:
            continue
        for port, h in svc.TCP.items():
            old = old_svc.TCP.get(port)
            if old is not None and serve_type(old) != serve_type(h):
                raise ServeConfigError(f"want to serve {serve_type(h)!r}, but port {port} is already serving "
                                       f"{serve_type(old)!r} for {name}")


# -- slices --------------------------------------------------------------------------------------------------
def _web_on(web: dict[str, WebServerConfig], port: int) -> dict[str, WebServerConfig]:
    out = {}
    for key, w in web.items():
        with contextlib.suppress(ServeConfigError):
            if split_host_port(key)[1] == port:
                out[key] = w
    return out


def port_slice(cfg: ServeConfig, port: int) -> str:
    """Go's JSON of the parts of ``cfg`` one node port serves: its TCP handler and the Web servers on it."""
    return to_go_json(ServeConfig(TCP={port: cfg.TCP[port]}, Web=_web_on(cfg.Web, port))).decode()


def service_slice(cfg: ServeConfig, name: str, port: int) -> str:
    """The same for ``port`` of the service ``name`` (as a node-shaped config: a connection serves it
    alike, looking its Web server up under the service's FQDN, Go ``webServerConfig``)."""
    svc = cfg.Services[name]
    return to_go_json(ServeConfig(TCP={port: svc.TCP[port]}, Web=_web_on(svc.Web, port))).decode()


# -- Funnel through Serve ---------------------------------------------------------------------------
def funnel_targets(cfg: ServeConfig | None) -> dict[str, int]:
    """Go ``HasFunnelForTarget`` + ``FindTCP``: each ``AllowFunnel`` ``host:port`` that is on (lower-cased
    host) and whose port has a TCP handler → that port. What is not here gets no ingress (403)."""
    if cfg is None:
        return {}
    out: dict[str, int] = {}
    for key, on in cfg.AllowFunnel.items():
        if not on:
            continue
        host, port = split_host_port(key)
        if port in cfg.TCP:
            out[f"{host.lower()}:{port}"] = port
    return out


def funnel_ports(cfg: ServeConfig | None) -> list[int]:
    """The ports ``AllowFunnel`` turns on (Go's ``CheckFunnelAccess`` is asked for each)."""
    if cfg is None:
        return []
    return sorted({split_host_port(k)[1] for k, on in cfg.AllowFunnel.items() if on})


def ingress_flags(cfg: ServeConfig | None) -> tuple[bool, bool]:
    """``(Hostinfo.IngressEnabled, Hostinfo.WireIngress)`` as Go's ``hasIngressEnabledLocked`` (some
    ``AllowFunnel`` entry on) and ``shouldWireInactiveIngressLocked`` (entries, none on)."""
    if cfg is None:
        return False, False
    enabled = any(cfg.AllowFunnel.values())
    return enabled, bool(cfg.AllowFunnel) and not enabled


# -- requests ------------------------------------------------------------------------------------------
def web_key(host_header: str, sni: str | None, tailnet_domain: str, port: int) -> str:
    """The ``Web`` key a request is served from (Go ``getServeHandler`` + ``webServerConfig``): the TLS
    server name, or the Host header without its port and completed with the tailnet's MagicDNS
    domain (``tail1234.ts.net``) unless it already ends in it."""
    if sni is not None:
        host = sni
    else:
        host = host_header
        if ":" in host:
            with contextlib.suppress(ServeConfigError):
                host, _ = split_host_port(host)
        suffix = "." + tailnet_domain.strip(".")
        if suffix != "." and not host.endswith(suffix):
            host += suffix
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def match_web(handlers: dict[str, HTTPHandler], url_path: str) -> tuple[HTTPHandler, str] | None:
    """Go ``getServeHandler``'s walk: the handler and the mount it was found at, or None (404)."""
    if url_path in handlers:
        return handlers[url_path], url_path
    if not url_path.startswith("/"):
        return None  # "*" or an authority form: no mount, and no endless walk
    pth = posixpath.normpath(url_path)
    if pth.startswith("//"):
        pth = "/" + pth.lstrip("/")
    while True:
        with_slash = pth if pth.endswith("/") else pth + "/"
        if with_slash in handlers:
            return handlers[with_slash], with_slash
        if pth in handlers:
            return handlers[pth], pth
        if pth == "/":
            return None
        parent = posixpath.dirname(pth)
        if parent == pth:
            return None
        pth = parent


def parse_redirect(redirect: str) -> tuple[int, str]:
    """Go ``parseRedirectWithCode``: ``"301:https://…"`` → (301, URL); no valid 3xx prefix → 302."""
    code = redirect[:3]
    if len(redirect) >= 4 and redirect[3] == ":" and code.isdigit() and 300 <= int(code) <= 399:
        return int(redirect[:3]), redirect[4:]
    return 302, redirect


def expand_redirect(target: str, host: str, request_uri: str) -> str:
    """``${HOST}`` and ``${REQUEST_URI}`` as Go's ``serveWebHandler`` replaces them."""
    return target.replace("${HOST}", host).replace("${REQUEST_URI}", request_uri)


def expand_proxy_arg(s: str) -> tuple[str, bool]:
    """Go ``expandProxyArg``: (target URL, skip TLS verification)."""
    if not s:
        return "", False
    if s.startswith("unix:") or s.startswith(("http://", "https://")):
        return s, False
    if s.startswith("https+insecure://"):
        return "https://" + s[len("https+insecure://"):], True
    if s.isdigit() and s.isascii():
        return "http://127.0.0.1:" + s, False
    return "http://" + s, False


def strip_mount(url_path: str, mount: str) -> str:
    """Go ``http.StripPrefix(strings.TrimSuffix(mount, "/"))`` (not applied to ``/`` itself)."""
    if url_path == "/":
        return url_path
    prefix = mount.rstrip("/")
    return url_path[len(prefix):] if url_path.startswith(prefix) else url_path


def path_target(root: str, mount: str, url_path: str) -> str | None:
    """The file a Path handler at ``mount`` serves for ``url_path`` under ``root``, or None when the
    path holds a ``..`` segment (Go's FileServer answers 400; no traversal out of ``root``)."""
    rel = strip_mount(url_path, mount) if mount != "/" else url_path
    if any(seg == ".." for seg in rel.replace("\\", "/").split("/")):
        return None
    clean = posixpath.normpath("/" + rel.lstrip("/"))
    if clean in ("/", "/."):
        return root
    return posixpath.join(root, clean.lstrip("/"))
