"""The published-template rules one by one (policy/templates.py, docs/policy.md "Object templates"),
and what a definition is signed as (model/templates.py as_published)."""
from __future__ import annotations

import pytest

from fedmisp.model.templates import as_published
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.reasons import Reason
from fedmisp.policy.templates import check_template_version, template_reason

ORG, OTHER = "org-a", "org-b"
CURRENT = KeyState(org=ORG)


def test_1_a_key_of_no_known_organisation_is_refused_even_for_a_first_version():
    assert check_template_version(None, None, 1, KeyState()) is Reason.UNKNOWN_AUTHOR
    assert check_template_version(ORG, 1, 2, KeyState()) is Reason.UNKNOWN_AUTHOR


def test_2_the_first_version_is_taken_from_any_known_organisation():
    assert check_template_version(None, None, 1, KeyState(org=OTHER)) is Reason.ALLOWED


def test_a_held_version_whose_owner_is_unknown_here_is_replaced_by_no_one():
    assert check_template_version(None, 1, 2, KeyState(org=OTHER)) is Reason.TEMPLATE_OTHER_ORG


@pytest.mark.parametrize("signer, reason", [
    (KeyState(org=OTHER), Reason.TEMPLATE_OTHER_ORG),
    (KeyState(org=ORG, retired_at=1_700_000_000), Reason.ORG_KEY_NOT_CURRENT),
    (CURRENT, Reason.ALLOWED),
])
def test_3_a_later_version_only_from_a_current_key_of_the_owner(signer, reason):
    assert check_template_version(ORG, 1, 2, signer) is reason


@pytest.mark.parametrize("version, reason", [(1, Reason.TEMPLATE_NOT_NEWER), (2, Reason.TEMPLATE_NOT_NEWER),
                                             (3, Reason.ALLOWED)])
def test_4_only_a_higher_version_replaces_the_held_one(version, reason):
    assert check_template_version(ORG, 2, version, CURRENT) is reason


@pytest.mark.parametrize("template_uuid, published, reason", [
    (None, False, Reason.ALLOWED),  # an object without a template uuid: nothing to hold
    ("43b3b146-77eb-4931-b4cc-b66c60f28734", False, Reason.ALLOWED),  # domain-ip, shipped
    ("4ec55cc6-9e49-4c64-b794-03c25c1a6589", True, Reason.ALLOWED),  # published and held
    ("4ec55cc6-9e49-4c64-b794-03c25c1a6589", False, Reason.TEMPLATE_NOT_HELD),
])
def test_an_object_is_taken_only_with_its_template_held(template_uuid, published, reason):
    assert template_reason(template_uuid, published) is reason


def test_a_definition_is_signed_with_an_integer_version_and_every_ui_priority():
    definition = {"name": "t", "version": "12", "attributes": {"a": {"misp-attribute": "text"},
                                                              "b": {"misp-attribute": "text", "ui-priority": 3}}}
    out = as_published(definition)
    assert out["version"] == 12 and out["attributes"]["a"]["ui-priority"] == 0
    assert out["attributes"]["b"]["ui-priority"] == 3
    assert definition["version"] == "12"  # the caller's copy is left alone
    for version in ("1.5", "-1", "٣", "12345678901", 7):
        assert as_published({"version": version})["version"] == version  # left for validation to name
