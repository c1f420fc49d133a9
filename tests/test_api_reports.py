"""Event reports through the API, driven by the real PyMISP client against a real node process
(the `server` fixture of test_api.py): add, view, edit, delete and index as PyMISP calls them."""
from __future__ import annotations

import uuid

from pymisp import MISPEventReport

from test_api import Server, assert_misp_error, new_event
from fedmisp.store.query import element_id


def _report(name: str = "Initial access", content: str = "# Phishing\n\nThe lure used @[attribute](x).",
            distribution: int = 5) -> MISPEventReport:
    r = MISPEventReport()
    r.name, r.content, r.distribution = name, content, distribution
    return r


def test_add_a_report_and_read_it_back_by_id_uuid_event_view_and_index(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports"), pythonify=True)
    added = misp.add_event_report(event.id, _report(), pythonify=True)
    assert isinstance(added, MISPEventReport)
    assert added.name == "Initial access" and added.content.startswith("# Phishing")
    assert int(added.id) == element_id(added.uuid) and int(added.event_id) == int(event.id)
    assert int(added.distribution) == 5
    assert misp.get_event_report(added.id, pythonify=True).uuid == added.uuid
    assert misp.get_event_report(added.uuid, pythonify=True).id == added.id
    view = misp.get_event(event.id, pythonify=True)
    assert [r.uuid for r in view.event_reports] == [added.uuid]
    listed = misp.get_event_reports(event.id, pythonify=True)
    assert [r.uuid for r in listed] == [added.uuid]
    # the whole-node index holds it too, and a value filter searches name and content
    assert added.uuid in {r["EventReport"]["uuid"] for r in server.get("/eventReports/index").json()}
    assert [r["EventReport"]["uuid"] for r in server.get("/eventReports/index/value:lure used").json()
            if r["EventReport"]["uuid"] == added.uuid] == [added.uuid]
    assert server.get("/eventReports/index/value:no-such-text-anywhere").json() == []


def test_edit_a_report_makes_a_newer_revision_and_a_stale_timestamp_is_refused(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports edit"), pythonify=True)
    added = misp.add_event_report(event.id, _report(), pythonify=True)
    before = misp.get_event(event.id, pythonify=True).timestamp
    added.content = "# Phishing\n\nRevised."
    added.name = "Initial access (revised)"
    edited = misp.update_event_report(added, pythonify=True)
    assert (edited.name, edited.content) == ("Initial access (revised)", "# Phishing\n\nRevised.")
    assert misp.get_event(event.id, pythonify=True).timestamp >= before
    stale = server.post(f"/eventReports/edit/{added.id}", {"EventReport": {"content": "old", "timestamp": "1"}})
    assert_misp_error(stale, 403, "not newer")
    assert misp.get_event_report(added.id, pythonify=True).content == "# Phishing\n\nRevised."


def test_soft_and_hard_delete_as_misp(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports delete"), pythonify=True)
    soft = misp.add_event_report(event.id, _report("soft"), pythonify=True)
    hard = misp.add_event_report(event.id, _report("hard"), pythonify=True)
    answer = misp.delete_event_report(soft.id)
    assert answer["success"] is True and answer["message"] == f"Event Report {soft.id} soft deleted"
    assert misp.delete_event_report(soft.uuid)["name"] == f"Event Report {soft.uuid} soft deleted"  # as MISP
    assert misp.get_event_report(soft.id, pythonify=True).deleted  # kept, marked deleted
    answer = misp.delete_event_report(hard.id, hard=True)
    assert "hard deleted" in answer["message"]
    assert server.get(f"/eventReports/view/{hard.id}").status_code == 404
    view = misp.get_event(event.id, pythonify=True)
    assert [r.uuid for r in view.event_reports] == []  # events/view hides soft-deleted reports, as MISP
    deleted = server.post(f"/events/view/{event.id}", {"deleted": 1}).json()["Event"]
    assert [r["uuid"] for r in deleted.get("EventReport", [])] == [soft.uuid]


def test_bad_reports_get_a_400_naming_the_field_and_nothing_is_stored(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports bad"), pythonify=True)
    timestamp = misp.get_event(event.id, pythonify=True).timestamp
    for body, field in (({"name": "", "content": "x"}, "name"), ({"name": "n"}, "content"),
                        ({"name": "n", "content": "x", "distribution": 9}, "distribution"),
                        ({"name": "n", "content": ["x"]}, "content"), ("just text", "EventReport"),
                        ({"name": "n", "content": "x", "uuid": "nope"}, "uuid")):
        response = server.post(f"/eventReports/add/{event.id}", {"EventReport": body} if isinstance(body, dict) else body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text
    assert misp.get_event(event.id, pythonify=True).timestamp == timestamp
    assert misp.get_event_reports(event.id) == []
    assert_misp_error(server.post("/eventReports/add/999999", {"name": "n", "content": "x"}), 404, "Invalid event")
    assert server.get(f"/eventReports/view/{uuid.uuid4()}").status_code == 404
    assert_misp_error(server.get("/eventReports/index/colour:blue"), 400, "colour")


def test_a_report_uuid_in_use_is_refused(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports uuid"), pythonify=True)
    first = misp.add_event_report(event.id, _report(), pythonify=True)
    again = _report("again")
    again.uuid = first.uuid
    assert_misp_error(server.post(f"/eventReports/add/{event.id}", again), 403, "already in use")


def test_reports_of_another_organisations_event_cannot_be_changed(server: Server):
    response = server.post(f"/eventReports/add/{server.foreign_event}", {"name": "n", "content": "x"})
    assert response.status_code == 403, response.text


def test_a_read_only_key_reads_reports_but_cannot_add_them(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("reports roles"), pythonify=True)
    added = misp.add_event_report(event.id, _report(), pythonify=True)
    reader = server.misp("read-only")
    assert reader.get_event_report(added.id, pythonify=True).uuid == added.uuid
    refused = server.post(f"/eventReports/add/{event.id}", {"name": "n", "content": "x"}, role="read-only")
    assert refused.status_code == 403
