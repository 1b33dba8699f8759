"""``CertManager``: the node's TLS certificates (Go ``ipn/ipnlocal/cert.go`` ``GetCertPEM``).

It owns the certificate entries of the state store (``cache``). ``GetCertPair`` answers from the
cache while the cert is valid, and past 2/3 of its lifetime also starts a renewal in the background
(Go's async renewal; ARI is not used); with no usable cert it starts an ACME DNS-01 order and
answers when it ends. One order at a time per domain: asks that arrive meanwhile wait for the same
order. An order runs on its own worker thread (``order.order_certificate``: HTTP to the ACME server
and a ``SetDns`` ask to control), never in a handler; the worker tells ``CertOrderDone`` and this
actor stores the pair and answers the waiting asks. The ACME account key is made on first use
(P-256, Go's ``acmeKey``) and kept in the store; it and the cert keys never appear in a message's
repr, a trace or a log.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from pytsnet.actors.cert.cache import (
    ACME_ACCOUNT_KEY,
    cert_key,
    key_key,
    load_valid,
    parse_valid,
    renew_at,
    valid_looking_domain,
)
from pytsnet.actors.cert.order import AcmeOrderError, new_ec_key_pem, order_certificate
from pytsnet.actors.control.store import StateStore
from pytsnet.actors.runtime import Actor, ActorRef, ActorStopped, AskTimeout, StopReason, handles
from pytsnet.actors.runtime.ref import Reply
from pytsnet.messages.cert import (
    CertManagerSpawn,
    CertOrderDone,
    CertPairAnswer,
    CertStatus,
    GetCertPair,
    GetCertStatus,
    SetDns,
)

__all__ = ["CERT", "CertManager"]

CERT = "cert"
log = logging.getLogger("pytsnet.cert")


class CertManager(Actor):
    def __init__(self, spawn: CertManagerSpawn, store: StateStore) -> None:
        self.spawn = spawn
        self.store = store
        self._waiting: dict[str, list[Reply | None]] = {}
        self._ordering: set[str] = set()
        self.counters = {"orders": 0, "issued": 0, "failed": 0, "cache_hits": 0, "renewals": 0}

    def on_stop(self, reason: StopReason) -> None:
        """Asks waiting for an order get a typed failure: on a restart, asking again gets the cert (the
        order's worker tells its outcome to the next incarnation, which stores it)."""
        waiting = [r for rs in self._waiting.values() for r in rs]
        self._waiting.clear()
        answer = CertPairAnswer(failure="acme",
                                error=f"the cert manager stopped during the order ({reason.kind.value}): "
                                      "ask again")
        for reply in waiting:
            if reply is not None:
                reply.set(answer)

    @handles(GetCertStatus)
    def on_status(self, msg: GetCertStatus) -> CertStatus:
        return CertStatus(counters=dict(self.counters), ordering=tuple(sorted(self._ordering)))

    @handles(GetCertPair)
    def on_get_pair(self, msg: GetCertPair) -> CertPairAnswer | None:
        domain = msg.domain
        if not valid_looking_domain(domain):
            return CertPairAnswer(failure="invalid_domain", error=f"invalid domain {domain[:80]!r}")
        if not msg.cert_domains:  # Go's checkCertDomain wording
            return CertPairAnswer(failure="https_disabled",
                                  error="your tailnet does not support getting TLS certs (no CertDomains: "
                                        "enable HTTPS on the tailnet; localnet: --https)")
        if domain not in msg.cert_domains:
            return CertPairAnswer(failure="invalid_domain",
                                  error=f"invalid domain {domain!r}; must be one of {list(msg.cert_domains)}")
        now = self.clock.time()
        cached = load_valid(self.store, domain, now)
        if cached is not None:
            self.counters["cache_hits"] += 1
            if now >= renew_at(cached) and domain not in self._ordering:
                self.counters["renewals"] += 1
                log.info("cert(%s): past 2/3 of its lifetime: starting async renewal", domain)
                self._start_order(domain)
            return CertPairAnswer(cert_pem=cached.cert_pem.decode(), key_pem=cached.key_pem.decode(),
                                  cached=True)
        self._waiting.setdefault(domain, []).append(self.defer_reply())
        if domain not in self._ordering:
            self._start_order(domain)
        return None

    def _account_key(self) -> bytes:
        key = self.store.read_state(ACME_ACCOUNT_KEY)
        if not key:
            key = new_ec_key_pem()
            self.store.write_state(ACME_ACCOUNT_KEY, key)
        return key

    def _start_order(self, domain: str) -> None:
        self._ordering.add(domain)
        self.counters["orders"] += 1
        control = self.lookup(self.spawn.control)
        account = self._account_key()
        me = self.ref
        spawn = self.spawn
        threading.Thread(target=_run_order, args=(me, control, spawn, account, domain),
                         name=f"acme-{domain[:40]}", daemon=True).start()

    @handles(CertOrderDone)
    def on_order_done(self, msg: CertOrderDone) -> None:
        domain = msg.domain
        self._ordering.discard(domain)
        waiting = self._waiting.pop(domain, [])
        answer: CertPairAnswer
        pair = None if msg.error else parse_valid(msg.cert_pem.encode(), msg.key_pem.encode(), domain,
                                                   self.clock.time())
        if pair is None:
            self.counters["failed"] += 1
            error = msg.error or "the ACME server returned a certificate not valid for the domain now"
            log.warning("cert(%s): %s", domain, error)
            answer = CertPairAnswer(failure="acme", error=error)
        else:
            self.counters["issued"] += 1
            self.store.write_state(key_key(domain), pair.key_pem)  # key first, as Go
            self.store.write_state(cert_key(domain), pair.cert_pem)
            log.info("cert(%s): got cert valid until %s", domain, pair.leaf.not_valid_after_utc.isoformat())
            answer = CertPairAnswer(cert_pem=msg.cert_pem, key_pem=msg.key_pem)
        for reply in waiting:
            if reply is not None:
                reply.set(answer)


def _run_order(me: ActorRef, control: ActorRef | None, spawn: CertManagerSpawn, account: bytes,
               domain: str) -> None:
    """The worker thread: one order, its outcome told to the manager."""
    def set_txt(name: str, value: str) -> None:
        if control is None:
            raise AcmeOrderError("set-dns: no control client")
        try:
            ans = control.ask(SetDns(name=name, value=value), timeout=30.0)
        except (ActorStopped, AskTimeout) as e:
            raise AcmeOrderError(f"set-dns: {type(e).__name__}") from None
        if ans.status != 200:
            raise AcmeOrderError(f"set-dns response: {ans.status} {ans.body or ans.error}"[:300])

    try:
        issued = order_certificate(spawn.directory_url, account, domain, set_txt,
                                   verify=spawn.ca_file or True, timeout=30.0)
        done = CertOrderDone(domain=domain, cert_pem=issued.cert_pem.decode(),
                             key_pem=issued.key_pem.decode())
    except AcmeOrderError as e:
        done = CertOrderDone(domain=domain, error=str(e))
    except Exception as e:  # a bug must still end the order, never leave its waiters hanging
        done = CertOrderDone(domain=domain, error=f"ACME order failed: {type(e).__name__}")
    with contextlib.suppress(ActorStopped):  # the device closed meanwhile
        me.tell(done)
