#!/usr/bin/env python3
"""Checks the stand-in against HubSpot's own client: the official API classes' calls succeed
and their answers deserialize (an email archived and a contact GDPR-deleted by email included),
and bodies HubSpot refuses are refused and recorded.

    dev/hubspot-contract/run --selftest
"""

import json
import threading
import urllib.request
from http.server import ThreadingHTTPServer

import hubspot.crm.associations.v4 as assoc_v4
import hubspot.crm.companies as companies
import hubspot.crm.contacts as contacts
import hubspot.crm.objects.emails as emails

import server

TOKEN = "selftest-token"


def client(module, base):
    config = module.Configuration(host=base)
    config.access_token = TOKEN
    config.client_side_validation = True
    return module.ApiClient(configuration=config)


def post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def delete(base, path, body=None):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=body, method="DELETE", headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    server.Handler.log_message = lambda *args: None
    server.Handler.portal = portal = server.Portal(TOKEN, ["emails:mailstream_message_id"])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    portal.create("deals", {"dealname": "Renewal"}, "901")

    upsert = contacts.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        contacts.SimplePublicObjectBatchInputUpsert(id_property="email", id="sam@acme.io",
                                                    properties={"email": "sam@acme.io"})])
    contact = contacts.BatchApi(client(contacts, base)).upsert(upsert).results[0]
    assert contact.new is True, contact
    company = companies.BatchApi(client(companies, base)).upsert(
        companies.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            companies.SimplePublicObjectBatchInputUpsert(id_property="domain", id="acme.io",
                                                         properties={"name": "Acme"})])).results[0]
    spec = emails.AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=198)
    email = emails.BasicApi(client(emails, base)).create(emails.SimplePublicObjectInputForCreate(
        properties={"hs_timestamp": "2026-12-06T10:00:00Z", "hs_email_direction": "INCOMING_EMAIL",
                    "mailstream_message_id": "m1@acme.io"},
        associations=[emails.PublicAssociationsForObject(
            to=emails.PublicObjectId(id=contact.id), types=[spec])]))
    found = emails.BasicApi(client(emails, base)).get_by_id(
        "m1@acme.io", id_property="mailstream_message_id")
    assert found.id == email.id, found
    v4 = assoc_v4.BasicApi(client(assoc_v4, base))
    v4.create_default("emails", email.id, "companies", company.id)
    v4.create("emails", email.id, "deals", "901", [assoc_v4.AssociationSpec(
        association_category="HUBSPOT_DEFINED", association_type_id=210)])
    assoc_v4.BatchApi(client(assoc_v4, base)).create("contacts", "companies",
        assoc_v4.BatchInputPublicAssociationMultiPost(inputs=[assoc_v4.PublicAssociationMultiPost(
            _from=assoc_v4.PublicObjectId(id=contact.id), to=assoc_v4.PublicObjectId(id=company.id),
            types=[assoc_v4.AssociationSpec(association_category="HUBSPOT_DEFINED",
                                            association_type_id=279)])]))
    assert portal.violations == [], portal.violations
    assert len(portal.associations) == 4, portal.associations

    refused = {
        "an int where HubSpot takes a string": ("/crm/v3/objects/contacts/batch/upsert", {"inputs": [
            {"idProperty": "email", "id": "a@b.io", "properties": {"email": "a@b.io", "phone": 5}}]}),
        "an unknown key": ("/crm/v3/objects/contacts/batch/upsert", {"inputs": [
            {"idProperty": "email", "id": "a@b.io", "properties": {}, "associations": []}]}),
        "no id": ("/crm/v3/objects/contacts/batch/upsert", {"inputs": [
            {"idProperty": "email", "properties": {}}]}),
        "a property the portal lacks": ("/crm/v3/objects/emails", {"properties": {
            "hs_timestamp": "1", "mailstream_message_id": "m2", "hs_direction": "INCOMING_EMAIL"}}),
        "no hs_timestamp": ("/crm/v3/objects/emails", {"properties": {"mailstream_message_id": "m3"}}),
        "a type id as a string": ("/crm/v3/objects/emails", {"properties": {"hs_timestamp": "1"},
            "associations": [{"to": {"id": contact.id}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": "198"}]}]}),
        "a type id joining other objects": ("/crm/v3/objects/emails", {"properties": {
            "hs_timestamp": "1"}, "associations": [{"to": {"id": contact.id}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}),
        "a deal that does not exist": ("/crm/v3/objects/emails", {"properties": {
            "hs_timestamp": "1"}, "associations": [{"to": {"id": "42"}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 210}]}]}),
        "a bad category": ("/crm/v3/objects/emails", {"properties": {"hs_timestamp": "1"},
            "associations": [{"to": {"id": contact.id}, "types": [
                {"associationCategory": "HUBSPOT", "associationTypeId": 198}]}]}),
        "a value over the limit": ("/crm/v3/objects/emails", {"properties": {
            "hs_timestamp": "1", "hs_email_text": "x" * 65537}}),
        "an upsert by a property that is not unique": ("/crm/v3/objects/contacts/batch/upsert", {
            "inputs": [{"idProperty": "firstname", "id": "Sam", "properties": {}}]}),
    }
    for why, (path, body) in refused.items():
        before = len(portal.violations)
        status = post(base, path, body)
        assert status == 400 and len(portal.violations) == before + 1, (why, status)
    duplicate = {"inputs": [{"idProperty": "email", "id": "a@b.io", "properties": {}}] * 2}
    assert post(base, "/crm/v3/objects/contacts/batch/upsert", duplicate) == 409

    # An erasure, by HubSpot's client: the email archived, the contact GDPR-deleted by email.
    emails.BasicApi(client(emails, base)).archive(email.id)
    assert email.id not in portal.objects["emails"], portal.objects["emails"]
    assert [e["id"] for e in portal.archived["emails"]] == [email.id], portal.archived
    contacts.BasicApi(client(contacts, base)).purge(contacts.PublicGdprDeleteInput(
        object_id="sam@acme.io", id_property="email"))
    assert contact.id not in portal.objects["contacts"] and portal.gdpr_deleted == [contact.id]
    assert not [a for a in portal.associations if contact.id in (a[1], a[3])], portal.associations
    assert portal.blocklist == [], portal.blocklist
    contacts.BasicApi(client(contacts, base)).purge(contacts.PublicGdprDeleteInput(
        object_id="nobody@acme.io", id_property="email"))
    assert portal.blocklist == ["nobody@acme.io"], "an unknown email is blocklisted"
    gdpr = "/crm/v3/objects/contacts/gdpr-delete"
    erasures_refused = {
        "no objectId": {"idProperty": "email"},
        "an unknown key": {"objectId": "kim@acme.io", "idProperty": "email", "email": "kim@acme.io"},
        "an idProperty that is not unique": {"objectId": "Kim", "idProperty": "firstname"},
        "an objectId as a number": {"objectId": 1001},
    }
    for why, body in erasures_refused.items():
        before = len(portal.violations)
        status = post(base, gdpr, body)
        assert status == 400 and len(portal.violations) == before + 1, (why, status)
    violations = len(portal.violations)
    assert delete(base, f"/crm/v3/objects/emails/{email.id}") == 404, "already archived"
    assert delete(base, f"/crm/v3/objects/emails/{email.id}", b"{}") == 400, "a body"
    assert len(portal.violations) == violations + 1
    httpd.shutdown()
    refused = len(refused) + len(erasures_refused) + 1
    print(f"selftest ok: HubSpot's client accepted, {refused} bad bodies refused")


if __name__ == "__main__":
    main()
