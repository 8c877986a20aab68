"""Certificates for the policy host from an ACME CA (RFC 8555), answered by tls-alpn-01 (RFC 8737)
or, where the operator prefers port 80, by http-01 (RFC 8555 §8.3).

The protocol (JOSE, nonces, orders, polling) is certbot's `acme` library; what it no longer
ships is the tls-alpn-01 challenge type, registered here through its own extension mechanism,
and the validation certificate (RFC 8737 §3: the name as the only SAN, the SHA-256 of the key
authorization in a critical id-pe-acmeIdentifier extension), built with `cryptography`. The
validation is answered on the serving port: while a name's challenge is pending, a handshake
for it that offers ALPN `acme-tls/1` gets the validation certificate (`server.py`). With
http-01 the plain-HTTP listener (`challenge_http.py`) answers the token's path with the key
authorization, for the name it was issued for only.

The library is synchronous; `issue()` runs in a thread. Every failure leaves it as
AcmeFailure, carrying the CA's problem type (RFC 8555 §6.7, e.g. `rateLimited`) and its
`Retry-After` (§6.6), which the library reads for polling only: the network layer below keeps
the last refused response's header so the renewal loop can wait as long as the CA asked.

The account key (JWK) and every issued key and chain are written 0600 under the state
directory, in certbot's layout, so the certificate set loads them like any other file.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import logging
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from josepy.jwk import JWK, JWKRSA

from mta_sts_policyd.state_files import write_atomically

log = logging.getLogger(__name__)

ACME_TLS_ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
USER_AGENT = "mta-sts-policyd-host"
TLS_ALPN_01, HTTP_01 = "tls-alpn-01", "http-01"


class AcmeFailure(Exception):
    """An order that did not end in a certificate, with what the CA said about trying again."""

    def __init__(self, reason: str, problem: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.problem = problem
        """The ACME problem type (urn:ietf:params:acme:error:...), or "" (network, timeout)."""
        self.retry_after = retry_after
        """Seconds the CA asked us to wait (its Retry-After), or None."""


def retry_after_seconds(value: str | None, now: datetime.datetime) -> float | None:
    """An HTTP Retry-After value (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) as seconds
    from `now`; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())


class _Network(client.ClientNetwork):
    """The library's network layer, remembering the CA's last refusal (status, Retry-After)."""

    refused: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        if not response.ok:
            self.refused = response
        return response


def _failure(exc: Exception, network: _Network | None) -> AcmeFailure:
    problem = exc.typ if isinstance(exc, messages.Error) else ""
    answered = isinstance(exc, messages.Error | errors.ClientError)  # the refusal it came from
    refused = network.refused if network is not None and answered else None
    retry = None
    if refused is not None:
        now = datetime.datetime.now(datetime.UTC)
        retry = retry_after_seconds(refused.headers.get("Retry-After"), now)
    return AcmeFailure(str(exc) or type(exc).__name__, problem, retry)


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) response that tells the CA to validate (RFC 8737 §3)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 tls-alpn-01, for the `acme` library's challenge registry."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **unused: Any) -> bytes:
        """SHA-256 of the key authorization: the acmeIdentifier extension's content."""
        return hashlib.sha256(self.key_authorization(account_key).encode()).digest()


challenges.ChallengeResponse.register(TLSALPN01Response)


def validation_context(name: str, digest: bytes) -> ssl.SSLContext:
    """A server context answering the challenge for `name`: self-signed, ALPN acme-tls/1."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(  # DER OCTET STRING of the 32-byte digest
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols([ACME_TLS_ALPN])
    with tempfile.TemporaryDirectory() as folder:  # ssl loads chains from files only
        chain, key_file = Path(folder, "c.pem"), Path(folder, "k.pem")
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_key_pem(key))
        context.load_cert_chain(chain, key_file)
    return context


class AcmeIssuer:
    """Orders certificates for names of an allow-list and writes them for the certificate set."""

    def __init__(
        self,
        directory_url: str,
        state_dir: Path,
        email: str = "",
        ca_bundle: str | None = None,
        challenge: str = TLS_ALPN_01,
    ) -> None:
        if challenge not in (TLS_ALPN_01, HTTP_01):
            raise ValueError(f"unknown ACME challenge type {challenge!r}")
        self.directory_url = directory_url
        self.challenge = challenge
        self.state_dir = state_dir
        self.certs_dir = state_dir / "certs"
        self.email = email
        self.ca_bundle = ca_bundle
        self.pending: dict[str, ssl.SSLContext] = {}
        """Name -> validation context while its challenge is open (read by the SNI callback)."""
        self.http_tokens: dict[str, tuple[str, str]] = {}
        """http-01 token -> (name, key authorization) while its challenge is open."""

    def challenge_for(self, name: str) -> ssl.SSLContext | None:
        return self.pending.get(name)

    def http_answer(self, name: str, token: str) -> str | None:
        """The key authorization for an http-01 request to `name` (RFC 8555 §8.3), or None."""
        entry = self.http_tokens.get(token)
        return entry[1] if entry is not None and entry[0] == name else None

    def issue(self, name: str, timeout: float = 120.0) -> Path:
        """One certificate for `name` (blocking; run it in a thread). Returns its folder;
        raises AcmeFailure, with the CA's problem type and Retry-After when it gave them."""
        account_key = self._account_key()
        verify: bool | str = self.ca_bundle or True
        network = _Network(account_key, user_agent=USER_AGENT, verify_ssl=verify)  # type: ignore[arg-type]
        try:
            return self._issue(name, account_key, network, timeout)
        except Exception as exc:
            raise _failure(exc, network) from exc

    def _issue(self, name: str, account_key: JWK, network: _Network, timeout: float) -> Path:
        acme = self._client(network)
        cert_key = ec.generate_private_key(ec.SECP256R1())
        csr = crypto_util.make_csr(_key_pem(cert_key), [name])
        order = acme.new_order(csr)
        try:
            for authz in order.authorizations:
                self._answer(acme, authz, account_key)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            self.pending.pop(name, None)
            for token in [t for t, (n, _) in self.http_tokens.items() if n == name]:
                self.http_tokens.pop(token, None)
        folder = self._install(name, _key_pem(cert_key), order.fullchain_pem.encode())
        log.info("event=acme-issued name=%s", name)
        return folder

    def _install(self, name: str, key: bytes, chain: bytes) -> Path:
        """Key and chain into `certs/NAME/` as a pair: written in a staging folder beside
        `certs/`, then swapped in by two renames. A reload in between finds no folder for the
        name and keeps the certificate in use; it never sees a new key with an old chain."""
        staging = self.state_dir / "staging"
        new, old = staging / f"{name}.new", staging / f"{name}.old"
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        _write_private(new / "privkey.pem", key)
        _write_private(new / "fullchain.pem", chain)
        folder = self.certs_dir / name
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.exists():
            folder.rename(old)
        new.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder

    def _answer(
        self, acme: client.ClientV2, authz: messages.AuthorizationResource, key: JWK
    ) -> None:
        if authz.body.status == messages.STATUS_VALID:
            return
        name = authz.body.identifier.value
        kind = TLSALPN01 if self.challenge == TLS_ALPN_01 else challenges.HTTP01
        challb = next((c for c in authz.body.challenges if isinstance(c.chall, kind)), None)
        if challb is None:
            raise errors.Error(f"the CA offers no {self.challenge} challenge for {name}")
        if isinstance(challb.chall, TLSALPN01):
            self.pending[name] = validation_context(name, challb.chall.validation(key))
        else:
            token = challb.chall.encode("token")
            self.http_tokens[token] = (name, challb.chall.validation(key))
        log.info("event=acme-challenge name=%s type=%s", name, self.challenge)
        acme.answer_challenge(challb, challb.chall.response(key))

    def _client(self, network: _Network) -> client.ClientV2:
        directory = client.ClientV2.get_directory(self.directory_url, network)
        acme = client.ClientV2(directory, network)
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True
        )
        try:
            network.account = acme.new_account(registration)
        except errors.ConflictError as exists:  # this key has an account already
            network.account = messages.RegistrationResource(
                uri=exists.location, body=messages.Registration()
            )
        return acme

    def _account_key(self) -> JWK:
        path = self.state_dir / "account.json"
        if path.exists():
            return JWK.json_loads(path.read_text())
        key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        _write_private(path, json.dumps(key.to_json()).encode())
        return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, data)
