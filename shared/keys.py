"""API and write keys: random bearer secrets, stored only as SHA-256 digests.

The keys are 32 random bytes, so a plain digest is enough (no slow KDF needed: there is no
dictionary to attack), and lookups stay a single indexed equality.
"""

import hashlib
import secrets


def new_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
