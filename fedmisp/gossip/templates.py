"""Published object templates: publish one, take one from a peer, hand the held ones to validation.

A template is a misp-objects definition.json signed by the publishing node (model/records.py
KIND_TEMPLATE); the shape checks are model/templates.py's, who may publish which version is
policy/templates.py's, applied in the store's write transaction (store/templates.py). It goes to
every peer, like an org record (decision 0030).
"""
from __future__ import annotations

from typing import Any

from fedmisp.model.describe import ObjectTemplate
from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_TEMPLATE, Record, seal
from fedmisp.model.templates import TemplateError, as_published, check_not_shipped, validate_definition
from fedmisp.policy.reasons import Reason
from fedmisp.store.store import Store

# what a refusal of this node's own publication means, for the one who published it
_REFUSED = {
    Reason.TEMPLATE_OTHER_ORG: "template.uuid: {uuid} is a template another organisation published; "
                               "only a current key of that organisation publishes its next version",
    Reason.TEMPLATE_NOT_NEWER: "template.version: {version} is not above the version held ({held}); "
                               "a new version needs a higher number",
}


def publish(store: Store, identity: Identity, definition: Any) -> tuple[ObjectTemplate, Record]:
    """Sign and hold a template definition (TemplateError naming the field if it does not validate
    or the rules refuse it); its record goes to every peer."""
    definition = as_published(definition)
    template = validate_definition(definition)
    check_not_shipped(template)
    record = seal(identity, KIND_TEMPLATE, dict(sorted(definition.items())))
    held = store.template_record(template.uuid)
    if held is not None and held.body == record.body:
        return template, held  # published already, unchanged
    reason = store.accept_template(record)
    if reason is not Reason.ALLOWED:
        message = _REFUSED.get(reason, "template: refused ({reason})")
        raise TemplateError(message.format(uuid=template.uuid, version=template.version, reason=reason.value,
                                           held=held.body.get("version") if held is not None else "none"))
    return template, record


def accept(store: Store, record: Record) -> Reason:
    """A template version from a peer (its signer known, its shape checked by the session)."""
    return store.accept_template(record)
