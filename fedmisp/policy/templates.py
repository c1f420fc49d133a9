"""Published object templates: which version of a template a node takes (decision 0030).

Rules for a received or published template version, against the one held (numbered as in
docs/policy.md "Object templates"):
  1. the signer is a key of an organisation this node knows (that it signed while current is
     checked before, as for every record: policy/inbound.py author_reason);
  2. the first version of a template uuid makes its signer's organisation the template's owner;
  3. a later version replaces the held one only when signed by a current key of the same
     organisation (a forged version, signed by another organisation's key, is refused);
  4. and only when its version number is higher (an equal or lower one is ignored, as MISP's
     template update keeps the highest version).
"""
from __future__ import annotations

from fedmisp.model.describe import object_templates
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.reasons import Reason


def check_template_version(held_org: str | None, held_version: int | None, version: int,
                           signer: KeyState) -> Reason:
    """`held_version`: the version held (None: none) and `held_org` its owner (None: the key that
    signed it names no organisation known here); `signer`: what this node knows of the key that
    signed the new one."""
    # 1. a key of a known organisation (author_reason checked that it signed while current)
    if signer.org is None:
        return Reason.UNKNOWN_AUTHOR
    # 2. the first version
    if held_version is None:
        return Reason.ALLOWED
    # 3. a current key of the owner's organisation only (an owner this node no longer knows the
    #    organisation of is nobody's to replace)
    if held_org is None or signer.org != held_org:
        return Reason.TEMPLATE_OTHER_ORG
    if signer.retired_at is not None:
        return Reason.ORG_KEY_NOT_CURRENT
    # 4. a higher version
    if version <= held_version:
        return Reason.TEMPLATE_NOT_NEWER
    return Reason.ALLOWED


def template_reason(template_uuid: str | None, published_held: bool) -> Reason:
    """Inbound, for each object of a received revision: the template it names (by uuid) is held,
    shipped with misp-objects or published (`published_held`); otherwise the revision is refused
    until the template arrives. Only the template's presence is checked here: the object was
    validated against it where it was made, and a peer's data stays its author's (decision 0030)."""
    if not template_uuid or published_held or template_uuid in object_templates():
        return Reason.ALLOWED
    return Reason.TEMPLATE_NOT_HELD
