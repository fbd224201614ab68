"""PyJWT internals the template uses."""

from __future__ import annotations

import jwt
from jwt.algorithms import HMACAlgorithm


def hmac_codec(algorithm: str, secret: str) -> jwt.PyJWT:
    """A PyJWT for one HMAC algorithm and secret, whose key is prepared once.

    PyJWT prepares the key at every encode and decode: it makes sure an HMAC secret is
    not an asymmetric key or a JWK (PEM, SSH and DER patterns, a JSON parse), 10 µs of
    a 35 µs decode (measured), and a decode runs at every Socket.IO connect. The secret
    here is fixed, so it is checked once, here (a bad one raises now). The codec's own
    PyJWS (`_jws`) has the algorithm registered in place of PyJWT's; everything else
    is PyJWT's."""
    codec = jwt.PyJWT()
    signatures = codec._jws
    standard = signatures.get_algorithm_by_name(algorithm)
    if not isinstance(standard, HMACAlgorithm):
        raise ValueError(f"{algorithm} is not an HMAC algorithm")
    signatures.unregister_algorithm(algorithm)
    signatures.register_algorithm(algorithm, _PreparedKey(standard.hash_alg, secret))
    return codec


class _PreparedKey(HMACAlgorithm):
    """PyJWT's HMAC algorithm, with one secret's prepared key kept."""

    def __init__(self, hash_alg, secret: str) -> None:
        super().__init__(hash_alg)
        self._secret = secret
        self._prepared = super().prepare_key(secret)

    def prepare_key(self, key):
        if key == self._secret:  # (the key is the caller's, never a token's)
            return self._prepared
        return super().prepare_key(key)
