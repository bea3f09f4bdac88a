#!/usr/bin/env python3
"""ECDSA P-384 with SHA-384 and the deterministic nonce of RFC 6979 (HMAC-SHA-384), in pure
Python (standard library only): an oracle for the signatures of PROTOCOL.md §11, independent of
the Rust implementation and of RustCrypto.

Reads commands from standard input, one per line, and answers each on one line:

    public <private key hex>             -> <SEC1 compressed public key hex>
    sign <private key hex> <message hex> -> <r ‖ s hex> <high|low>

The message is hashed with SHA-384; `high` means s > n/2 (n the group order), `low` s <= n/2.
Before answering it checks itself against RFC 6979 appendix A.2.6 (P-384, SHA-384, "sample"), and
exits with status 1 if that fails.
"""

import hashlib
import hmac
import sys

# FIPS 186-4 / SEC 2 secp384r1.
P = 2**384 - 2**128 - 2**96 + 2**32 - 1
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
B = 0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF
G = (
    0xAA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7,
    0x3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F,
)


def add(p1, p2):
    """Affine point addition on y^2 = x^3 - 3x + B; None is the point at infinity."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    if p1[0] == p2[0] and (p1[1] + p2[1]) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * p1[0] * p1[0] - 3) * pow(2 * p1[1], -1, P) % P
    else:
        slope = (p2[1] - p1[1]) * pow(p2[0] - p1[0], -1, P) % P
    x = (slope * slope - p1[0] - p2[0]) % P
    return (x, (slope * (p1[0] - x) - p1[1]) % P)


def mul(k, point):
    result = None
    for bit in bin(k)[2:]:
        result = add(result, result)
        if bit == "1":
            result = add(result, point)
    return result


def compressed(point):
    return bytes([2 + (point[1] & 1)]) + point[0].to_bytes(48, "big")


def rfc6979_nonce(x, digest):
    """RFC 6979 §3.2 with HMAC-SHA-384; qlen = hlen = 384, so bits2int is a plain conversion."""

    def mac(key, data):
        return hmac.new(key, data, hashlib.sha384).digest()

    x_octets = x.to_bytes(48, "big")
    h_octets = (int.from_bytes(digest, "big") % N).to_bytes(48, "big")
    v = b"\x01" * 48
    k = b"\x00" * 48
    k = mac(k, v + b"\x00" + x_octets + h_octets)
    v = mac(k, v)
    k = mac(k, v + b"\x01" + x_octets + h_octets)
    v = mac(k, v)
    while True:
        v = mac(k, v)
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < N:
            return candidate
        k = mac(k, v + b"\x00")
        v = mac(k, v)


def sign(x, message):
    digest = hashlib.sha384(message).digest()
    e = int.from_bytes(digest, "big")
    k = rfc6979_nonce(x, digest)
    r = mul(k, G)[0] % N
    s = pow(k, -1, N) * (e + r * x) % N
    assert r != 0 and s != 0
    return r, s


def self_test():
    assert (G[1] ** 2 - G[0] ** 3 + 3 * G[0] - B) % P == 0, "G is not on the curve"
    assert mul(N, G) is None, "N * G is not the point at infinity"
    # RFC 6979 A.2.6: P-384, private key x, SHA-384, message "sample".
    x = 0x6B9D3DAD2E1B8C1C05B19875B6659F4DE23C3B667BF297BA9AA47740787137D896D5724E4C70A825F872C9EA60D2EDF5
    ux = 0xEC3A4E415B4E19A4568618029F427FA5DA9A8BC4AE92E02E06AAE5286B300C64DEF8F0EA9055866064A254515480BC13
    k = 0x94ED910D1A099DAD3254E9242AE85ABDE4BA15168EAF0CA87A555FD56D10FBCA2907E3E83BA95368623B8C4686915CF9
    r = 0x94EDBB92A5ECB8AAD4736E56C691916B3F88140666CE9FA73D64C4EA95AD133C81A648152E44ACF96E36DD1E80FABE46
    s = 0x99EF4AEB15F178CEA1FE40DB2603138F130E740A19624526203B6351D0A3A94FA329C145786E679E7B82C71A38628AC8
    assert mul(x, G)[0] == ux, "RFC 6979 A.2.6 public key"
    assert rfc6979_nonce(x, hashlib.sha384(b"sample").digest()) == k, "RFC 6979 A.2.6 nonce"
    assert sign(x, b"sample") == (r, s), "RFC 6979 A.2.6 signature"


def main():
    try:
        self_test()
    except AssertionError as e:
        print(f"self-test failed: {e}", file=sys.stderr)
        return 1
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        x = int(words[1], 16)
        if words[0] == "public":
            print(compressed(mul(x, G)).hex())
        elif words[0] == "sign":
            r, s = sign(x, bytes.fromhex(words[2]))
            half = "high" if s > N // 2 else "low"
            print(f"{r:096x}{s:096x} {half}")
        else:
            print(f"unknown command {words[0]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
