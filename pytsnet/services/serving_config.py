"""The serve config edits of an HTTP-mode ``ListenService`` (Go ``ServeConfig.SetWebHandler`` for a
service name and ``RemoveServiceWebHandler``), as pure functions on the frozen ``ServeConfig``.

Go clears the whole serve config at a tsnet node's first ``Up``, so any entry for the port is from
this run and refused ("a Service handler already exists for this port"). Here the serve config is
persisted across restarts (issue 20 point 3), so an entry whose every handler proxies to a loopback
address (what ``ListenService`` writes) and that no open listener of this run owns (the caller
checked ``ServiceHosting`` first) is a leftover of an earlier run and is replaced; any other entry
is refused as Go does.
"""

from __future__ import annotations

from pytsnet.errors import ServiceUnavailable
from pytsnet.wire.serve import HTTPHandler, ServeConfig, ServiceConfig, TCPPortHandler, WebServerConfig

__all__ = ["with_service_forward", "with_service_web", "without_service_forward", "without_service_web"]

LOOPBACK_PROXY = ("127.0.0.1:", "http://127.0.0.1:", "localhost:", "http://localhost:")


def _leftover(svc: ServiceConfig, host_port: str, port: int | None = None) -> bool:
    web = svc.Web.get(host_port)
    if web is None and port is not None and port in svc.TCP:  # 20h: a forward to loopback
        return svc.TCP[port].TCPForward.startswith(LOOPBACK_PROXY)
    return web is not None and bool(web.Handlers) and all(
        h.Proxy.startswith(LOOPBACK_PROXY) for h in web.Handlers.values())


def with_service_web(cfg: ServeConfig | None, name: str, fqdn: str, port: int, https: bool,
                     proxy: str) -> ServeConfig:
    """``cfg`` with ``name``'s ``port`` serving HTTP(S) whose ``/`` proxies to ``proxy``."""
    cfg = cfg or ServeConfig()
    hp = f"{fqdn}:{port}"
    svc = cfg.Services.get(name) or ServiceConfig()
    if port in svc.TCP and not _leftover(svc, hp, port):
        raise ServiceUnavailable(f"a Service handler already exists for this port ({name} port {port})")
    tcp = {**svc.TCP, port: TCPPortHandler(HTTPS=https, HTTP=not https)}
    web = {**svc.Web, hp: WebServerConfig(Handlers={"/": HTTPHandler(Proxy=proxy)})}
    services = {**cfg.Services, name: svc.model_copy(update={"TCP": tcp, "Web": web})}
    return cfg.model_copy(update={"Services": services})


def without_service_web(cfg: ServeConfig | None, name: str, fqdn: str, port: int,
                        proxy: str) -> ServeConfig | None:
    """``cfg`` without the ``/`` handler ``with_service_web`` added (Go ``RemoveServiceWebHandler``: an
    emptied web server takes its TCP port along, an emptied service goes); unchanged when the entry
    is no longer ours (replaced meanwhile)."""
    if cfg is None or name not in cfg.Services:
        return cfg
    svc = cfg.Services[name]
    hp = f"{fqdn}:{port}"
    web = svc.Web.get(hp)
    if web is None or web.Handlers.get("/", HTTPHandler()).Proxy != proxy:
        return cfg
    handlers = {m: h for m, h in web.Handlers.items() if m != "/"}
    webs = {**svc.Web, hp: WebServerConfig(Handlers=handlers)}
    tcp = dict(svc.TCP)
    if not handlers:
        del webs[hp]
        tcp.pop(port, None)
    services = dict(cfg.Services)
    if webs or tcp:
        services[name] = svc.model_copy(update={"TCP": tcp, "Web": webs})
    else:
        del services[name]
    return cfg.model_copy(update={"Services": services})


# -- TCP mode with TerminateTLS / PROXY protocol (Go ``SetTCPForwardingForService``) -------------
def with_service_forward(cfg: ServeConfig | None, name: str, fqdn: str, port: int, target: str,
                         terminate_tls: bool, proxy_protocol: int) -> ServeConfig:
    """``cfg`` with ``name``'s ``port`` forwarded to ``target`` (TLS terminated for ``fqdn`` when
    asked, the PROXY header of ``proxy_protocol`` first); a leftover entry of an earlier run (its
    Web server for the port included) is replaced, any other refused as Go does."""
    cfg = cfg or ServeConfig()
    hp = f"{fqdn}:{port}"
    svc = cfg.Services.get(name) or ServiceConfig()
    if port in svc.TCP and not _leftover(svc, hp, port):
        raise ServiceUnavailable(f"a Service handler already exists for this port ({name} port {port})")
    tcp = {**svc.TCP, port: TCPPortHandler(TCPForward=target, TerminateTLS=fqdn if terminate_tls else "",
                                           ProxyProtocol=proxy_protocol)}
    web = {k: v for k, v in svc.Web.items() if k != hp}
    services = {**cfg.Services, name: svc.model_copy(update={"TCP": tcp, "Web": web})}
    return cfg.model_copy(update={"Services": services})


def without_service_forward(cfg: ServeConfig | None, name: str, port: int, target: str) -> ServeConfig | None:
    """``cfg`` without the forward ``with_service_forward`` added; unchanged when no longer ours."""
    if cfg is None or name not in cfg.Services:
        return cfg
    svc = cfg.Services[name]
    h = svc.TCP.get(port)
    if h is None or h.TCPForward != target:
        return cfg
    tcp = {p: x for p, x in svc.TCP.items() if p != port}
    services = dict(cfg.Services)
    if tcp or svc.Web:
        services[name] = svc.model_copy(update={"TCP": tcp})
    else:
        del services[name]
    return cfg.model_copy(update={"Services": services})
