"""CVE-2020-25658 (rsa 4.6 -> 4.7): PKCS#1 v1.5 decryption accepts too little padding.

``rsa.decrypt`` must reject cleartexts whose random padding is shorter than 8 bytes; 4.6 accepted
any ``00 02 <padding> 00 <message>`` and also failed at different points for different defects,
a timing oracle (Bleichenbacher). 4.7 checks the marker and separator position in constant time
and rejects padding under 8 bytes. The check encrypts ``00 02`` + 7 padding bytes + ``00`` +
message with the raw RSA primitive under a fixed 256-bit key built in ``prepare()`` and reports
whether ``rsa.decrypt`` hands the message back. (Not hotpatchable as a whole release: 4.7 grows
``AbstractKey.__slots__``, so keys that exist before a patch cannot follow it.)
"""

from __future__ import annotations

import rsa
import rsa.common
import rsa.core
import rsa.transform

_P = 73501750341981762009390118264104971239169
_Q = 952012915993512416357028802352127193
_E = 65537


def prepare() -> object:
    n, phi = _P * _Q, (_P - 1) * (_Q - 1)
    return rsa.PrivateKey(n, _E, pow(_E, -1, phi), _P, _Q)


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, rsa.PrivateKey)
    size = rsa.common.byte_size(ctx.n)
    message = b"m" * (size - 10)
    padded = b"\x00\x02" + b"\x55" * 7 + b"\x00" + message
    value = rsa.core.encrypt_int(rsa.transform.bytes2int(padded), ctx.e, ctx.n)
    if rsa.decrypt(rsa.encrypt(b"ok", rsa.PublicKey(ctx.n, ctx.e)), ctx) != b"ok":
        raise RuntimeError("well-padded round trip failed")
    try:
        return rsa.decrypt(rsa.transform.int2bytes(value, size), ctx) == message
    except rsa.DecryptionError:
        return False
