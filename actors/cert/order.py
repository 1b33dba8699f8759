"""One ACME DNS-01 order, as Go's ``ipn/ipnlocal/cert.go`` ``getCertPEM`` runs it, on the ``acme``
package (certbot's RFC 8555 client: JWS, nonces and polling are its; nothing hand-rolled here).

Blocking (HTTP to the ACME server, and ``set_txt`` asks control): the ``CertManager`` runs it on a
worker thread, never in a handler. Steps: find or register the account (the key is the caller's: the
state store keeps it), order ``domain``, for each authorization publish the DNS-01 TXT record under
``_acme-challenge.<domain>`` through ``set_txt`` (control's ``/machine/set-dns``) and answer the
challenge, finalize with a CSR for a fresh P-256 key (Go's ``certRequest``), return the chain and key.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acme import challenges, client, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

__all__ = ["AcmeOrderError", "IssuedCert", "new_ec_key_pem", "order_certificate"]

USER_AGENT = "pytsnet-acme"
ORDER_DEADLINE = 90.0
"""Seconds an order may take from authorizations to the certificate (the acme package's default)."""


class AcmeOrderError(Exception):
    """The ACME server or control refused a step; the message names the step, never a key."""


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: bytes
    key_pem: bytes


def new_ec_key_pem() -> bytes:
    """A P-256 key as SEC1 ``EC PRIVATE KEY`` PEM (Go's ``encodeECDSAKey``: account and cert keys)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


class _Network(client.ClientNetwork):
    """``ClientNetwork`` whose ``verify`` may be a CA file (requests takes one; the package types it
    bool): the ACME server's TLS is checked against it instead of certifi's bundle."""

    def __init__(self, key: JWK, verify: bool | str, timeout: float) -> None:
        super().__init__(key, alg=ES256, user_agent=USER_AGENT, timeout=int(timeout))
        self.verify_ssl = verify  # type: ignore[assignment]


def _client(directory_url: str, account_key_pem: bytes, verify: bool | str,
            timeout: float) -> client.ClientV2:
    key = serialization.load_pem_private_key(account_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeOrderError("the stored ACME account key is not an ECDSA key")
    net = _Network(JWKEC(key=key), verify, timeout)
    try:
        directory = client.ClientV2.get_directory(directory_url, net)
    except Exception as e:  # requests' and the package's errors alike: one typed failure
        raise AcmeOrderError(f"ACME directory {directory_url}: {_brief(e)}") from None
    return client.ClientV2(directory, net)


def _ensure_account(acme: client.ClientV2) -> None:
    """Go's ``GetReg`` then ``Register``: an existing account for this key is reused."""
    try:
        acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    except errors.ConflictError as e:
        acme.net.account = acme.query_registration(messages.RegistrationResource(uri=e.location,
                                                                                 body=messages.Registration()))
    account = acme.net.account
    status = getattr(getattr(account, "body", None), "status", None)
    if status is not None and str(status) != "valid":
        raise AcmeOrderError(f"unexpected ACME account status {status}")


def order_certificate(directory_url: str, account_key_pem: bytes, domain: str,
                      set_txt: Callable[[str, str], None], *, verify: bool | str = True,
                      timeout: float = 30.0) -> IssuedCert:
    """Order a certificate for ``domain`` (``AcmeOrderError`` naming the failed step)."""
    try:
        acme = _client(directory_url, account_key_pem, verify, timeout)
        _ensure_account(acme)
        key_pem = new_ec_key_pem()
        csr = _csr(key_pem, domain)
        order = acme.new_order(csr)
        for authz in order.authorizations:
            challenge = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)),
                             None)
            if challenge is None:
                raise AcmeOrderError(f"the ACME server offered no dns-01 challenge for {domain}")
            if authz.body.status == messages.STATUS_VALID:
                continue  # an authorization the server reuses needs no record
            response, validation = challenge.chall.response_and_validation(acme.net.key)
            set_txt(f"_acme-challenge.{domain}", validation)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_DEADLINE)
        done = acme.poll_and_finalize(order, deadline)
    except AcmeOrderError:
        raise
    except Exception as e:  # the package raises many kinds (messages.Error, TimeoutError, requests')
        raise AcmeOrderError(f"ACME order for {domain}: {_brief(e)}") from None
    if not done.fullchain_pem:
        raise AcmeOrderError(f"ACME order for {domain}: no certificate in the finalized order")
    return IssuedCert(cert_pem=done.fullchain_pem.encode(), key_pem=key_pem)


def _csr(key_pem: bytes, domain: str) -> bytes:
    """Go's ``certRequest``: CN and the one SAN are the domain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key: Any = serialization.load_pem_private_key(key_pem, password=None)
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
           .sign(key, hashes.SHA256()))
    return req.public_bytes(serialization.Encoding.PEM)


def _brief(e: BaseException) -> str:
    """One line about ``e`` (its type and first 200 characters): no key material is ever in it."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
