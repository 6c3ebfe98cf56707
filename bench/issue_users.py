"""Bulk user issuance speed: in memory, and persisted to a store; beside it, the raw Ed25519 floor.

Prints:
  users_per_s_memory: N          key pair + signed JWT + creds text per second, nothing written (all cores)
  users_per_s_memory_1core: N    the same in one process
  floor_pynacl_per_s: N          Ed25519 key generation + one signature per second with PyNaCl (libsodium),
  floor_cryptography_per_s: N    ... and with cryptography (OpenSSL): in one process, no JSON, no base32,
                                 the message as long as one of the users' signed header.payload
  floor_keygen_sign_per_s: N     the faster of the two: the raw floor of issuance on one core
  issuance_to_floor_1core: R     users_per_s_memory_1core / floor_keygen_sign_per_s
  persist_1000_users_s: N        seconds to create and persist 1,000 users (seed, JWT, creds) in a store

The one-core issuance and the floors are measured in turns, best of five each, so that both see the
same machine.
"""

import os
import shutil
import time

from _common import work_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store

N = 10000


def best(f, runs=3):
    return min(f() for _ in range(runs))


def floor_pynacl(msg: bytes) -> float:
    urandom = os.urandom
    t0 = time.perf_counter()
    for _ in range(N):
        _public, secret = crypto_sign_seed_keypair(urandom(32))
        crypto_sign(msg, secret)
    return time.perf_counter() - t0


def floor_cryptography(msg: bytes) -> float:
    generate = Ed25519PrivateKey.generate
    t0 = time.perf_counter()
    for _ in range(N):
        key = generate()
        key.public_key().public_bytes_raw()
        key.sign(msg)
    return time.perf_counter() - t0


def main() -> None:
    root = work_dir()
    try:
        store = Store(root / "home")
        admin.init(store)
        acc = store.account("chat")
        signer = store.load_key(acc.public_key)
        spec = admin.UserSpec(sub_allow=["chat.>", "_INBOX.>"])
        names = [f"u{i}" for i in range(N)]
        sample = admin.issue_users(names[:1], acc.public_key, signer, spec, workers=1)[0][3]
        msg = os.urandom(len(sample.rpartition(".")[0]))

        def memory(workers):
            t0 = time.perf_counter()
            rows = admin.issue_users(names, acc.public_key, signer, spec, workers=workers)
            assert len(rows) == N and rows[-1][3].count(".") == 2
            return time.perf_counter() - t0

        mem = N / best(lambda: memory(None))
        one, nacl, crypto = [], [], []
        for _ in range(5):
            one.append(memory(1))
            nacl.append(floor_pynacl(msg))
            crypto.append(floor_cryptography(msg))
        mem1 = N / min(one)
        floor_nacl = N / min(nacl)
        floor_crypto = N / min(crypto)
        floor = max(floor_nacl, floor_crypto)

        run = [0]

        def persist():
            run[0] += 1
            t0 = time.perf_counter()
            admin.add_users(store, "chat", [f"r{run[0]}-{i}" for i in range(1000)], spec)
            return time.perf_counter() - t0

        persist_s = best(persist)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"users_per_s_memory: {mem:.0f}")
    print(f"users_per_s_memory_1core: {mem1:.0f}")
    print(f"floor_pynacl_per_s: {floor_nacl:.0f}")
    print(f"floor_cryptography_per_s: {floor_crypto:.0f}")
    print(f"floor_keygen_sign_per_s: {floor:.0f}")
    print(f"issuance_to_floor_1core: {mem1 / floor:.2f}")
    print(f"persist_1000_users_s: {persist_s:.2f}")


if __name__ == "__main__":
    main()
