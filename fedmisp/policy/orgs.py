"""Which org records a node accepts: key introductions and key rotations (decision 0013).

Pure rules over what the receiving node knows of the keys involved; the store applies them inside
its write transaction (store/store.py), the pull session uses them to know which keys a page
introduces (gossip/session.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from fedmisp.model.org import OrgClaim
from fedmisp.policy.reasons import Reason


@dataclass(frozen=True, slots=True)
class KeyState:
    """What a node knows of one public key."""
    org: str | None = None  # the organisation it signs for (None: unknown)
    retired_at: int | None = None  # when a rotation retired it (the rotation record's created time)
    successor: bytes | None = None  # the key that replaced it


def check_org_record(claim: OrgClaim, author: KeyState, new_key: KeyState, *, org_known: bool = False,
                     voucher: KeyState | None = None, pinned: bool = False) -> Reason:
    """1. An introduction (self-signed) makes an unknown key known; it cannot move a key to another
          organisation, nor bring back a retired key.
       2. A rotation must be signed by a current key of the organisation it names: a retired key, a
          key of another organisation or an unknown key is refused (a forged announcement).
       3. The new key of a rotation must be unknown: it cannot take over a key already in use.
       4. An organisation this node knows a key of (`org_known`) gets a further key only with its
          consent: the introduction carries a vouch by a current key of it (`voucher`: what this
          node knows of the vouching key), or this node's configuration pins the key to it
          (`pinned`: an operator's word). Otherwise any key could speak as any organisation, its
          sharing groups' owner included (decision 0019)."""
    if claim.previous is None:
        if author.retired_at is not None:
            return Reason.ORG_KEY_RETIRED
        if author.org is not None:
            return Reason.ALLOWED if author.org == claim.uuid else Reason.ORG_KEY_CONFLICT
        if org_known and not pinned and not (
                voucher is not None and voucher.org == claim.uuid and voucher.retired_at is None):
            return Reason.ORG_KEY_NOT_VOUCHED
        return Reason.ALLOWED
    if author.org != claim.uuid or author.retired_at is not None:
        return Reason.ORG_KEY_NOT_CURRENT
    if new_key.org is not None:
        return Reason.ORG_KEY_CONFLICT
    return Reason.ALLOWED


def signed_while_current(state: KeyState, created: int) -> bool:
    """A record by a retired key is accepted only if it was signed before the rotation (its
    `created`, which the key's holder sets: see decision 0013 on a stolen key)."""
    return state.retired_at is None or created <= state.retired_at
