"""Key material for Nova keypairs: checking imported keys, their fingerprints, and generating new
pairs. Pure functions (no I/O); generation is CPU-bound, so handlers run it in a thread.

Fingerprints are Nova's: for SSH keys the MD5 of the key blob in colon-separated hex (what
`ssh-keygen -l -E md5` prints), for X.509 certificates the SHA-1 of the DER certificate.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from api.errors import BadRequest

SSH, X509 = "ssh", "x509"
TYPES = (SSH, X509)
_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft's User Principal Name


def _colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2))


def ssh_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint of an OpenSSH public key line; 400 when it is not one. One line only:
    the key reaches the guest's authorized_keys through the metadata service, where a line
    break inside it would add a second key nobody imported."""
    if any(c in public_key.rstrip("\r\n") for c in "\r\n\x00"):  # a .pub file's own line end is fine
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint")
    try:
        serialization.load_ssh_public_key(public_key.encode())
        blob = base64.b64decode(public_key.split(" ")[1])
    except (ValueError, IndexError, UnsupportedAlgorithm, binascii.Error, UnicodeEncodeError):
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None
    return _colons(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def x509_fingerprint(pem: str) -> str:
    """The SHA-1 fingerprint of a PEM certificate; 400 when it is not one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise BadRequest(
            f"Keypair data is invalid: failed to generate X509 fingerprint. Error message: {exc}"
        ) from None
    return _colons(certificate.fingerprint(hashes.SHA1()).hex())  # noqa: S303 - Nova's fingerprint


def fingerprint(key_type: str, public_key: str) -> str:
    return x509_fingerprint(public_key) if key_type == X509 else ssh_fingerprint(public_key)


def generate_ssh() -> tuple[str, str, str]:
    """(private key PEM, public key line, fingerprint) of a new RSA-2048 pair, in the forms Nova
    returns: a traditional "RSA PRIVATE KEY" PEM and an "ssh-rsa … Generated-by-Nova" line."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = f"{public.decode()} Generated-by-Nova"
    return private, public_line, ssh_fingerprint(public_line)


def _utf8_string(text: str) -> bytes:
    """DER of an ASN.1 UTF8String (the otherName value a UPN carries)."""
    data = text.encode()
    if len(data) < 0x80:
        return bytes([0x0C, len(data)]) + data
    length = len(data).to_bytes((len(data).bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(length)]) + length + data


def generate_x509(user_id: str) -> tuple[str, str, str]:
    """(private key PEM, certificate PEM, fingerprint) of a new self-signed client certificate for
    the user, as Nova makes for WinRM: CN=<user id>, clientAuth, UPN <user id>@localhost, 10 years."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.OtherName(_UPN, _utf8_string(f"{user_id}@localhost"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return private, pem, x509_fingerprint(pem)


def generate(key_type: str, user_id: str) -> tuple[str, str, str]:
    return generate_x509(user_id) if key_type == X509 else generate_ssh()
