"""Sharing groups as signed revisions owned by the creating org.

Rules for a new revision, checked against the current one (numbered as in docs/policy.md):
  1. the first revision is signed by its owner, who is a member;
  2. a revision is newer than the current one (a lower or equal number is ignored);
  3. the owner never changes and is never removed;
  4. the owner may change anything else, members included (a removed member receives nothing new);
  5. an extend member may add members, and do nothing else.
"""
from __future__ import annotations

from fedmisp.policy.model import SharingGroup
from fedmisp.policy.reasons import Reason


def check_revision(current: SharingGroup | None, new: SharingGroup, author_org: str) -> Reason:
    # 1. the first revision is signed by its owner, who is a member
    if current is None:
        if author_org != new.owner:
            return Reason.SG_REVISION_AUTHOR
        if not new.is_member(new.owner):
            return Reason.SG_REVISION_OWNER_REMOVED
        return Reason.ALLOWED
    # 2. newer than the current revision
    if new.revision <= current.revision:
        return Reason.SG_REVISION_NOT_NEWER
    # 3. the owner never changes and is never removed
    if new.owner != current.owner:
        return Reason.SG_REVISION_OWNER_CHANGED
    if not new.is_member(new.owner):
        return Reason.SG_REVISION_OWNER_REMOVED
    # 4. the owner may change anything
    if author_org == current.owner:
        return Reason.ALLOWED
    # 5. an extend member may only add members
    if not current.members.get(author_org, False):
        return Reason.SG_REVISION_AUTHOR
    unchanged = (new.name == current.name and new.releasability == current.releasability
                 and new.description == current.description and new.deleted == current.deleted
                 and all(new.members.get(org) == extend for org, extend in current.members.items()))
    return Reason.ALLOWED if unchanged else Reason.SG_REVISION_EXTEND_REMOVES


def apply_revision(groups: dict[str, SharingGroup], new: SharingGroup, author_org: str) -> Reason:
    """Make `new` the current revision if the rules allow it; return the decision."""
    reason = check_revision(groups.get(new.uuid), new, author_org)
    if reason is Reason.ALLOWED:
        groups[new.uuid] = new
    return reason
