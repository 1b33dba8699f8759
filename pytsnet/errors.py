"""Every public error of pytsnet, in one place (also re-exported as ``pytsnet.<Name>``).

Each subclasses ``PytsnetError`` *and* the builtin an app would catch anyway (``TimeoutError``,
``ConnectionRefusedError``, ``PermissionError``, ``OSError``…), so ``except TimeoutError`` keeps
working, and each message says what to do next.

``RegistrationError`` is what ``up``/``wait_until_running`` raise: ``permanent`` tells an app whether
waiting longer can help (``AuthRejected``, ``KeyExpired``: no; ``NeedsLogin``, ``NetworkUnreachable``,
``RegistrationTimeout``: the node keeps trying in the background).

TCP outcomes come from the netstack (a lower layer, which cannot import this module) and are
re-exported here: ``ConnectionRefused``, ``ConnectionReset``, ``ConnectionTimedOut``,
``ConnectionAborted`` (each a ``TcpConnectionError`` and the matching builtin), and ``FlowCrashed``
(a ``ConnectionResetError``: the connection's actor died and the peer was sent an RST),
``FlowAborted`` (a ``ConnectionAbortedError``: the device closed with the connection open), and the
runtime's ``AskTimeout`` (a ``TimeoutError``: an actor did not answer a query such as ``peers()`` in
time; the node may be overloaded).
"""

from __future__ import annotations

from pytsnet.actors.netstack.channel import FlowAborted, FlowCrashed
from pytsnet.actors.runtime.errors import AskTimeout
from pytsnet.netstack.tcp.errors import (
    ConnectionAborted,
    ConnectionRefused,
    ConnectionReset,
    ConnectionTimedOut,
    TcpConnectionError,
)

__all__ = ["AcmeFailed", "AddressInUse", "AskTimeout", "AuthRejected", "CaptureError", "CertError",
           "ConfigError", "ConnectionAborted",
           "ConnectionRefused", "ConnectionReset", "ConnectionTimedOut", "DataplaneNotReady", "DeviceClosed",
           "DialTimeout", "ExitNodeUnavailable", "FlowAborted", "FlowCrashed", "HttpsNotEnabled",
           "InvalidCertDomain", "KeyExpired", "NeedsLogin",
           "NetworkUnreachable", "NotTailnetConnection", "OAuthRejected",
           "PytsnetError", "RegistrationError", "RegistrationTimeout", "StateDirLocked", "StateStoreError",
           "TagsNotPermitted", "TagsRequired", "TcpConnectionError", "UnknownTailnetHost"]


class PytsnetError(Exception):
    """Base of every error the facade raises."""


class ConfigError(PytsnetError, ValueError):
    """A setting cannot work (e.g. a control URL without ``http://``/``https://``, a port out of range);
    the message names the field and what it accepts: fix the config."""


class RegistrationError(PytsnetError):
    permanent = False


class AuthRejected(RegistrationError, PermissionError):
    """Control refused the credentials (a bad, used or expired auth key; a denied login)."""

    permanent = True

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"control rejected the credentials ({detail or 'no reason given'}): "
                         "create a new auth key and set Config.auth_key or TS_AUTHKEY")


class KeyExpired(RegistrationError, PermissionError):
    """The node key expired and control did not accept a rotated one: a new login is needed."""

    permanent = True

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"the node key expired ({detail or 'no reason given'}): log the node in again "
                         "(a new auth key) or disable key expiry for it in the admin panel")


class NeedsLogin(RegistrationError, PermissionError):
    """A human must visit ``url``; the node keeps waiting for that login to finish."""

    def __init__(self, url: str) -> None:
        super().__init__(f"login required: visit {url}, then wait again" if url else
                         "login required: set Config.auth_key (or TS_AUTHKEY), or wait for the login URL")
        self.url = url


class NetworkUnreachable(RegistrationError, ConnectionError):
    """Control could not be reached; the node keeps retrying with backoff."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"cannot reach the control server ({detail or 'no reason given'}): check "
                         "Config.control_url / TS_CONTROL_URL and the network; the node keeps retrying")


class RegistrationTimeout(RegistrationError, TimeoutError):
    """Still starting when the timeout passed, with no more specific reason."""


class DeviceClosed(PytsnetError, OSError):
    """The device was closed (or never started)."""


class DataplaneNotReady(PytsnetError, ConnectionError):
    """The data plane is not up yet (no netmap): a dial needs ``await dev.up()`` first."""


class UnknownTailnetHost(PytsnetError, OSError):
    """The host is neither a tailnet address of a known peer (or ours) nor a peer's MagicDNS name."""


class ExitNodeUnavailable(PytsnetError, ConnectionError):
    """An exit node is selected but cannot carry traffic, so a dial (or lookup) beyond the tailnet is
    refused rather than sent anywhere else (fail closed). ``reason`` is Go's health warning reason:
    ``not-yet-selected`` (no netmap yet), ``not-in-tailnet`` (no node matches the selector),
    ``offline``, ``no-exit-routes`` (the node offers no approved exit route); and, for a name lookup only,
    ``no-dns-proxy`` (ours: the engaged exit node does not serve DNS to its clients)."""

    HINTS = {"not-yet-selected": "the node has no netmap yet: await dev.up() first",
             "not-in-tailnet": "no tailnet node matches it: check the stable ID, IP or name",
             "offline": "control reports it offline: wait for it, or select another exit node",
             "no-exit-routes": "it does not offer an approved exit route (advertise and approve 0.0.0.0/0)",
             "no-dns-proxy": "it offers no DNS to its clients (no peerapi-dns-proxy service): dial by IP"}

    def __init__(self, selector: str, reason: str, target: str = "") -> None:
        where = f" for {target}" if target else ""
        super().__init__(f"exit node {selector!r} unavailable ({reason}){where}: "
                         f"{self.HINTS.get(reason, 'select another exit node')}; nothing was sent "
                         "(dev.set_exit_node(None) to use only the tailnet)")
        self.selector = selector
        self.reason = reason
        self.target = target


class DialTimeout(PytsnetError, TimeoutError):
    """A dial did not complete within its ``timeout`` (the peer is offline, or no path reaches it)."""


class AddressInUse(PytsnetError, OSError):
    """A tailnet port is already bound by this device (``listen``/``listen_packet`` twice)."""


class StateStoreError(PytsnetError, OSError):
    """The state file exists but is not a JSON object of base64 values: move it away (the node then
    registers afresh) or point ``Config.dir`` elsewhere."""


class StateDirLocked(StateStoreError):
    """Another live device (``pid``, possibly this process) holds ``Config.dir``: two nodes on one
    state would fight over the node key and the map stream. Close that device or use another dir."""

    def __init__(self, directory: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"state dir {directory} is in use by {holder}: close that device first, "
                         "or give this one its own Config.dir")
        self.directory = directory
        self.pid = pid


class CaptureError(PytsnetError, OSError):
    """A packet capture could not start (one is already running, or the file cannot be opened)."""


class NotTailnetConnection(PytsnetError, ValueError):
    """``whois_connection`` was given a socket the device did not bridge (not from ``listen_socket``
    or ``connect_socket``): its peer is no tailnet identity."""


# -- bootstrap (19c): auth keys minted from an OAuth client secret or an ID token ------------------
class TagsRequired(ConfigError):
    """An OAuth client secret or workload identity is set but ``Config.tags`` is empty: the key it
    mints must carry tags (Go: "oauth authkeys require --advertise-tags"). Raised before any request."""

    def __init__(self, how: str) -> None:
        super().__init__(f"{how} can only mint a tagged auth key, and Config.tags is empty: set "
                         "Config(tags=(\"tag:NAME\", ...)) to tags the OAuth client may use")


class OAuthRejected(AuthRejected):
    """The API refused the OAuth client secret, the ID token, or the key request (``status``, and
    the server's ``message``). Never holds the secret."""

    def __init__(self, step: str, status: int, message: str) -> None:
        RegistrationError.__init__(self, f"{step} refused (HTTP {status}: {message or 'no reason given'}): "
                                   "check Config.client_secret / TS_CLIENT_SECRET (or the client ID and "
                                   "ID token) and the API URL (Config.base_url / TS_BASE_URL)")
        self.step = step
        self.status = status
        self.message = message


class TagsNotPermitted(OAuthRejected):
    """The OAuth client may not create keys with these tags (the API's refusal, tsnsrv #237's case):
    ask for tags the client owns, or give the client these tags."""

    def __init__(self, tags: tuple[str, ...], status: int, message: str) -> None:
        RegistrationError.__init__(self, f"the OAuth client may not mint keys with tags {list(tags)} "
                                   f"(HTTP {status}: {message}): set Config.tags to tags the client was "
                                   "given, or add these tags to the client")
        self.step = "create auth key"
        self.status = status
        self.message = message
        self.tags = tags


class LocalApiError(PytsnetError, OSError):
    """The LocalAPI answered an error (its HTTP status and Go's text), or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


__all__ += ["LocalApiError"]  # 19a's own line: others edit the list above


class CertError(PytsnetError, OSError):
    """No TLS certificate for the domain; the subclass says why."""


class HttpsNotEnabled(CertError, PermissionError):
    """The tailnet gives this node no ``CertDomains`` (HTTPS is not enabled: Tailscale's admin panel,
    or localnet ``--https``), so no cert can be had and ``listen_tls`` cannot serve."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or "HTTPS is not enabled on the tailnet (no CertDomains in the netmap): "
                                   "enable HTTPS certificates in the admin panel (localnet: --https)")


class InvalidCertDomain(CertError, ValueError):
    """The domain is not one of this node's ``CertDomains``."""

    def __init__(self, domain: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"no cert for {domain[:100]!r}: this node may only get certs for {list(allowed)}")
        self.domain, self.allowed = domain, allowed


class AcmeFailed(CertError, ConnectionError):
    """The ACME order failed (the ACME server, or control's set-dns, refused or was unreachable); the
    message names the step. Retrying later may help."""


class ServeConfigInvalid(ConfigError):
    """A serve config that cannot be served (bad JSON or field, a port changing its serve type, a port an
    app already listens on); nothing of it was applied and the config in force is unchanged."""


class ServeETagMismatch(ServeConfigInvalid):
    """Go ``ErrETagMismatch``: the config changed since the ETag given with it was read (LocalAPI 412)."""


__all__ += ["ServeConfigInvalid", "ServeETagMismatch"]  # 20b's own line
class FunnelUnavailable(PytsnetError, OSError):
    """The tailnet cannot bring public connections to this node: HTTPS off, no ``funnel`` node
    attribute (Go's texts), or no ingress node the policy lets reach us. Never silently a tailnet-only
    listener: ask the tailnet's admin to enable Funnel (localnet: ``--funnel HOST:PORT``)."""


class FunnelPortNotAllowed(PytsnetError, ValueError):
    """The port is not one the tailnet lets this node Funnel (Go ``CheckFunnelPort``; Tailscale
    offers 443, 8443 and 10000)."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


__all__ += ["FunnelPortNotAllowed", "FunnelUnavailable"]  # 20c's own line


class UntaggedServiceHost(PytsnetError, PermissionError):
    """Go's ``ErrUntaggedServiceHost``: only a tagged node may host a Tailscale Service
    (``Config.tags`` with an auth key allowed those tags)."""


class ServiceUnavailable(PytsnetError, OSError):
    """``listen_service`` cannot serve as asked: a mode option this node does not implement yet, a
    port already served for that service, or control never gave the node the service's VIP."""


__all__ += ["ServiceUnavailable", "UntaggedServiceHost"]  # 20d's own line


class TailnetLockError(PytsnetError, RuntimeError):
    """A Tailnet Lock operation failed (``dev.lock_*``): control refused or did not answer, bad input,
    or the node is not logged in; the message says which."""


class TailnetLockNotEnabled(TailnetLockError, LookupError):
    """Go ``errNetworkLockNotActive``: the lock is not enabled on this node (``lock_init`` first, or
    wait for the netmap that enables it)."""


class TailnetLockNotTrusted(TailnetLockError, PermissionError):
    """Go ``TailnetLockNotTrustedMsg``: this node's network-lock key (``dev.lock_key()``) is not one of
    the authority's trusted keys, so it cannot sign nodes or change the keys."""


class TailnetLockDisablementRefused(TailnetLockError, PermissionError):
    """The disablement secret does not match any of the authority's disablement values: the lock
    stays on."""


__all__ += ["TailnetLockDisablementRefused", "TailnetLockError", "TailnetLockNotEnabled",
            "TailnetLockNotTrusted"]  # 21e's own line


class TaildropError(PytsnetError, OSError):
    """A Taildrop operation failed (``dev.send_file``, ``file_targets``, the waiting files); the message
    says why (the receiver's answer when it refused)."""


class TaildropNameInvalid(TaildropError, ValueError):
    """Go's ``invalid filename``: a path, ``.``/``..``, a reserved or ``.partial`` name, NUL or other
    unprintable characters, over 255 bytes — refused before sending, and by the receiver (400)."""


class TaildropRefused(TaildropError, PermissionError):
    """The peer is not a file target (Go ``FileTargets``), or its peerAPI refused us (403: not allowed
    to send it files, or it has no Taildrop directory)."""


class TaildropFileExists(TaildropError, FileExistsError):
    """Go's ``ErrFileExists`` (409): the same file from us is already being received there."""


class TaildropTooLarge(TaildropError):
    """The receiver's size or disk budget refused the file (413 / 507)."""


__all__ += ["TaildropError", "TaildropFileExists", "TaildropNameInvalid", "TaildropRefused",
            "TaildropTooLarge"]  # 22a's own line
