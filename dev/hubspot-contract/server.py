#!/usr/bin/env python3
"""A HubSpot stand-in that holds a client to HubSpot's published request shapes.

Every request body is read with the model classes of HubSpot's official Python client
(`hubspot-api-client`, generated from HubSpot's OpenAPI specs) with client-side validation on,
then walked against the models' `openapi_types` maps: an unknown key, a wrong JSON type or a
missing required field is a contract violation. So is a property the portal does not have, a
value HubSpot would refuse (an enumeration option that does not exist, a timestamp that is not
epoch milliseconds or ISO 8601, a string over 65,536 characters), an association whose type id
does not join the two object types, or an association to an object that does not exist. A
violation is answered 400 with HubSpot's error JSON naming the problem, and recorded.

HubSpot endpoints (objects: contacts, companies, deals, emails; by name or type id):
  POST /crm/v3/objects/{object}/batch/upsert   (`idProperty`: a unique property; two inputs
                                                 with the same id in one batch answer 409)
  POST /crm/v3/objects/{object}                 (409 when a unique property value exists)
  GET  /crm/v3/objects/{object}/{id}[?idProperty=P]
  PUT  /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}
  PUT  /crm/v4/objects/{from}/{id}/associations/{to}/{toId}   (body: a list of AssociationSpec)
  POST /crm/v4/associations/{from}/{to}/batch/create
  DELETE /crm/v3/objects/{object}/{id}          (archive: 204; 404 when there is no such object)
  POST /crm/v3/objects/contacts/gdpr-delete     (`PublicGdprDeleteInput`: the contact and its
                                                 associations deleted for good, 204; an email
                                                 no contact has is blocklisted, as HubSpot does)

Control endpoints for tests (not HubSpot's):
  GET  /_contract/state    violations, objects, associations, faults answered, requests,
                           archived objects, GDPR-deleted contacts, blocklisted emails
  POST /_contract/faults   {"rate_limit": N, "rate_limit_ms": T, "conflict": N}: the next N
                           calls, and every call for T ms from the next one on, answer 429 with the
                           TEN_SECONDLY_ROLLING policy body (no Retry-After, as HubSpot); the
                           next N batch upserts answer 409 as HubSpot does to duplicate inputs
                           in one batch
  POST /_contract/seed     {"deals": [{"id": "901", "properties": {...}}], ...}: objects
                           created in the portal by someone else (HubSpot ids are numeric)
"""

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import hubspot.crm.associations.v4 as assoc_v4

from contract import (ASSOCIATION_TYPES, CATEGORIES, MODULES, PROPERTIES, TEXT, TYPE_IDS, UNIQUE,
                      Violation, check_value, hubspot_error, now, validate)


class Portal:
    """One HubSpot account: objects, associations, armed faults and what was refused."""

    def __init__(self, token, unique):
        self.token = token
        self.lock = threading.Lock()
        self.objects = {name: {} for name in MODULES}
        self.properties = {name: dict(props) for name, props in PROPERTIES.items()}
        self.unique = {name: set(props) for name, props in UNIQUE.items()}
        for spec in unique:
            name, prop = spec.split(":", 1)
            self.properties[name][prop] = TEXT
            self.unique[name].add(prop)
        self.associations = set()
        self.violations = []
        self.faults = {"rate_limit": 0, "rate_limit_ms": 0, "conflict": 0}
        self.limited_until = 0.0
        self.answered = {"429": 0, "409-batch-duplicate": 0, "409-unique": 0}
        self.requests = {}
        self.next_id = 1000
        self.archived = {name: [] for name in MODULES}
        self.gdpr_deleted = []
        self.blocklist = []

    def check_properties(self, name, properties):
        invalid = []
        for prop, value in properties.items():
            if prop not in self.properties[name]:
                invalid.append({"isValid": False, "name": prop, "error": "PROPERTY_DOESNT_EXIST",
                                "message": f'Property "{prop}" does not exist'})
                continue
            kind, options = self.properties[name][prop]
            problem = check_value(kind, options, value)
            if problem:
                invalid.append({"isValid": False, "name": prop, "error": "INVALID_VALUE",
                                "message": problem})
        if invalid:
            raise Violation(f"Property values were not valid: {json.dumps(invalid)}")

    def find(self, name, prop, value):
        for obj in self.objects[name].values():
            if obj["properties"].get(prop) == value:
                return obj
        return None

    def create(self, name, properties, object_id=None):
        if object_id is None:
            self.next_id += 1
            object_id = str(self.next_id)
        stamp = now()
        obj = {"id": object_id, "properties": dict(properties, hs_object_id=object_id),
               "createdAt": stamp, "updatedAt": stamp, "archived": False}
        self.objects[name][object_id] = obj
        return obj

    def associate(self, from_name, from_id, to_name, to_id, specs):
        if to_id not in self.objects[to_name]:
            raise Violation(f"association to {to_name} {to_id}: no such object")
        for spec in specs:
            category, type_id = spec["associationCategory"], spec["associationTypeId"]
            if category not in CATEGORIES:
                raise Violation(f"associationCategory `{category}` is not one of {sorted(CATEGORIES)}")
            if category == "HUBSPOT_DEFINED" and type_id not in ASSOCIATION_TYPES.get((from_name, to_name), ()):
                raise Violation(f"association type {type_id} does not join {from_name} to {to_name}")
            self.associations.add((from_name, from_id, to_name, to_id, category, type_id))

    def remove(self, name, object_id):
        """Takes the object out of the portal with every association it is in."""
        obj = self.objects[name].pop(object_id)
        self.associations = {a for a in self.associations
                             if (a[0], a[1]) != (name, object_id) and (a[2], a[3]) != (name, object_id)}
        return obj

    def target_of(self, name, type_id):
        for (source, target), ids in ASSOCIATION_TYPES.items():
            if source == name and type_id in ids:
                return target
        raise Violation(f"association type {type_id} does not start at {name}")

    def state(self):
        return {
            "violations": self.violations, "faults": self.answered, "requests": self.requests,
            "archived": self.archived, "gdpr_deleted": self.gdpr_deleted,
            "blocklist": self.blocklist,
            "objects": {name: list(objs.values()) for name, objs in self.objects.items()},
            "associations": [dict(zip(("from_type", "from_id", "to_type", "to_id", "category",
                                        "type_id"), a)) for a in sorted(self.associations)],
        }


def object_name(segment):
    name = TYPE_IDS.get(segment, segment)
    if name not in MODULES:
        raise LookupError(segment)
    return name


def upsert(portal, name, body):
    module = MODULES[name]
    validate(module, "BatchInputSimplePublicObjectBatchInputUpsert", body)
    ids = [i["id"] for i in body["inputs"]]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates or portal.faults["conflict"] > 0:
        if not duplicates:
            portal.faults["conflict"] -= 1
        portal.answered["409-batch-duplicate"] += 1
        return 409, hubspot_error(f"Duplicate IDs found in batch input: {duplicates or ids}. "
                                  "IDs must be unique", "CONFLICT", context={"ids": duplicates or ids})
    for item in body["inputs"]:
        prop = item.get("idProperty")
        if prop not in portal.unique[name]:
            raise Violation(f"Unable to perform update/upsert by non-unique {name} property {prop}")
        portal.check_properties(name, item["properties"])
    started, results = now(), []
    for item in body["inputs"]:
        prop = item["idProperty"]
        existing = portal.find(name, prop, item["id"])
        if existing:
            existing["properties"].update(item["properties"])
            existing["updatedAt"] = now()
            results.append(dict(existing, new=False))
        else:
            created = portal.create(name, dict(item["properties"], **{prop: item["id"]}))
            results.append(dict(created, new=True))
    answer = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now()}
    validate(module, "BatchResponseSimplePublicUpsertObject", answer)
    return 200, answer


def create(portal, name, body):
    module = MODULES[name]
    validate(module, "SimplePublicObjectInputForCreate", body)
    properties = body["properties"]
    portal.check_properties(name, properties)
    if name == "emails" and "hs_timestamp" not in properties:
        raise Violation("hs_timestamp is required on an email engagement")
    targets = []
    for assoc in body.get("associations", []):
        type_ids = [t["associationTypeId"] for t in assoc["types"]]
        targets.append((portal.target_of(name, type_ids[0]), assoc))
    for prop in portal.unique[name] & properties.keys():
        if portal.find(name, prop, properties[prop]):
            portal.answered["409-unique"] += 1
            return 409, hubspot_error(f"A {name[:-1]} with {prop} `{properties[prop]}` already "
                                      "exists", "CONFLICT")
    for target, assoc in targets:
        if assoc["to"]["id"] not in portal.objects[target]:
            raise Violation(f"One or more associations are invalid: no {target} {assoc['to']['id']}")
    obj = portal.create(name, properties)
    for target, assoc in targets:
        portal.associate(name, obj["id"], target, assoc["to"]["id"], assoc["types"])
    validate(module, "SimplePublicObject", obj)
    return 201, obj


def read(portal, name, object_id, query):
    prop = query.get("idProperty", [None])[0]
    if prop is None:
        obj = portal.objects[name].get(object_id)
    elif prop in portal.unique[name]:
        obj = portal.find(name, prop, object_id)
    else:
        raise Violation(f"idProperty `{prop}` is not a unique property of {name}")
    if obj is None:
        return 404, hubspot_error("Object not found. objectId are usually numeric.", "OBJECT_NOT_FOUND")
    validate(MODULES[name], "SimplePublicObjectWithAssociations", obj)
    return 200, obj


def archive(portal, name, object_id, body):
    if body is not None:
        raise Violation("an archive takes no body")
    if object_id not in portal.objects[name]:
        return 404, hubspot_error("Object not found. objectId are usually numeric.", "OBJECT_NOT_FOUND")
    obj = portal.remove(name, object_id)
    portal.archived[name].append(dict(obj, archived=True, archivedAt=now()))
    return 204, None


def gdpr_delete(portal, body):
    validate(MODULES["contacts"], "PublicGdprDeleteInput", body)
    prop, object_id = body.get("idProperty"), body["objectId"]
    if prop is None:
        obj = portal.objects["contacts"].get(object_id)
    elif prop in portal.unique["contacts"]:
        obj = portal.find("contacts", prop, object_id)
    else:
        raise Violation(f"idProperty `{prop}` is not a unique property of contacts")
    if obj is None:
        if prop == "email":
            portal.blocklist.append(object_id)
            return 204, None
        return 404, hubspot_error("Object not found. objectId are usually numeric.", "OBJECT_NOT_FOUND")
    portal.remove("contacts", obj["id"])
    portal.gdpr_deleted.append(obj["id"])
    return 204, None


def route(portal, method, path, query, body):
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4:
        name = object_name(parts[3])
        rest = parts[4:]
        if method == "POST" and name == "contacts" and rest == ["gdpr-delete"]:
            return gdpr_delete(portal, body)
        if method == "DELETE" and len(rest) == 1:
            return archive(portal, name, rest[0], body)
        if method == "POST" and rest == ["batch", "upsert"]:
            return upsert(portal, name, body)
        if method == "POST" and not rest:
            return create(portal, name, body)
        if method == "GET" and len(rest) == 1:
            return read(portal, name, rest[0], query)
    if parts[:3] == ["crm", "v4", "objects"] and method == "PUT":
        return associate_one(portal, parts, body)
    if parts[:3] == ["crm", "v4", "associations"] and parts[5:] == ["batch", "create"]:
        source, target = object_name(parts[3]), object_name(parts[4])
        validate(assoc_v4, "BatchInputPublicAssociationMultiPost", body)
        results = []
        for item in body["inputs"]:
            if item["from"]["id"] not in portal.objects[source]:
                raise Violation(f"no {source} {item['from']['id']}")
            portal.associate(source, item["from"]["id"], target, item["to"]["id"], item["types"])
            results.append(pair(source, item["from"]["id"], target, item["to"]["id"]))
        answer = {"status": "COMPLETE", "results": results, "startedAt": now(), "completedAt": now()}
        validate(assoc_v4, "BatchResponseLabelsBetweenObjectPair", answer)
        return 201, answer
    raise LookupError(path)


def associate_one(portal, parts, body):
    # /crm/v4/objects/{from}/{id}/associations[/default]/{to}/{toId}
    tail = parts[5:]
    default = tail[1:2] == ["default"]
    if tail[:1] != ["associations"] or len(tail) != (4 if default else 3):
        raise LookupError("/".join(parts))
    source, source_id = object_name(parts[3]), parts[4]
    target, target_id = object_name(tail[-2]), tail[-1]
    if source_id not in portal.objects[source]:
        raise Violation(f"no {source} {source_id}")
    if default:
        if body is not None:
            raise Violation("the default association takes no body")
        specs = [{"associationCategory": "HUBSPOT_DEFINED",
                  "associationTypeId": min(ASSOCIATION_TYPES[(source, target)])}]
    else:
        validate(assoc_v4, "list[AssociationSpec]", body)
        specs = body
    portal.associate(source, source_id, target, target_id, specs)
    if default:
        answer = {"status": "COMPLETE", "startedAt": now(), "completedAt": now(), "results": [
            {"from": {"id": source_id}, "to": {"id": target_id}, "associationSpec": specs[0]}]}
        validate(assoc_v4, "BatchResponsePublicDefaultAssociation", answer)
        return 200, answer
    answer = pair(source, source_id, target, target_id)
    validate(assoc_v4, "LabelsBetweenObjectPair", answer)
    return 201, answer


def pair(source, source_id, target, target_id):
    type_ids = {name: type_id for type_id, name in TYPE_IDS.items()}
    return {"fromObjectTypeId": type_ids[source], "fromObjectId": source_id,
            "toObjectTypeId": type_ids[target], "toObjectId": target_id, "labels": []}


class Handler(BaseHTTPRequestHandler):
    portal = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def answer(self, status, body, headers=()):
        data = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        portal = self.portal
        with portal.lock:
            if url.path.startswith("/_contract/"):
                return self.control(method, url.path, raw)
            key = method + " " + re.sub(r"/(\d+|[^/]*(@|%40)[^/]*)(?=/|$)", "/{id}", url.path)
            portal.requests[key] = portal.requests.get(key, 0) + 1
            if self.headers.get("Authorization") != f"Bearer {portal.token}":
                return self.answer(401, hubspot_error(
                    "Authentication credentials not found.", "INVALID_AUTHENTICATION"))
            if portal.faults["rate_limit_ms"] > 0:
                portal.limited_until = time.monotonic() + portal.faults["rate_limit_ms"] / 1000
                portal.faults["rate_limit_ms"] = 0
            if portal.faults["rate_limit"] > 0 or time.monotonic() < portal.limited_until:
                portal.faults["rate_limit"] = max(0, portal.faults["rate_limit"] - 1)
                portal.answered["429"] += 1
                return self.answer(429, {
                    "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                    "policyName": "TEN_SECONDLY_ROLLING", "groupName": "publicapi:private-app"},
                    [("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
                     ("X-HubSpot-RateLimit-Max", "100"), ("X-HubSpot-RateLimit-Remaining", "0")])
            try:
                body = None
                if raw:
                    if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                        raise Violation("a body without Content-Type: application/json")
                    body = json.loads(raw)
                status, answer = route(portal, method, url.path, parse_qs(url.query), body)
            except LookupError:
                portal.violations.append({"request": f"{method} {self.path}",
                                          "problem": "no such HubSpot endpoint"})
                return self.answer(404, hubspot_error(f"Unable to route {method} {url.path}", "OBJECT_NOT_FOUND"))
            except (Violation, ValueError) as e:
                portal.violations.append({"request": f"{method} {url.path}", "problem": str(e)})
                return self.answer(400, hubspot_error(str(e), "VALIDATION_ERROR"))
            except Exception as e:  # a bug of the stand-in: recorded, so the test fails on it
                portal.violations.append({"request": f"{method} {url.path}",
                                          "problem": f"stand-in error {type(e).__name__}: {e}"})
                return self.answer(500, hubspot_error("internal error", "INTERNAL_ERROR"))
            self.answer(status, answer)

    def control(self, method, path, raw):
        portal = self.portal
        if method == "GET" and path == "/_contract/state":
            return self.answer(200, portal.state())
        body = json.loads(raw or b"{}")
        if method == "POST" and path == "/_contract/faults":
            for fault in portal.faults:
                portal.faults[fault] += int(body.get(fault, 0))
            return self.answer(200, portal.faults)
        if method == "POST" and path == "/_contract/seed":
            for name, objects in body.items():
                for obj in objects:
                    portal.create(object_name(name), obj.get("properties", {}), str(obj["id"]))
            return self.answer(200, {"seeded": True})
        return self.answer(404, {"error": f"no control endpoint {method} {path}"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="the private app token callers must send")
    parser.add_argument("--unique-property", action="append", default=[], metavar="OBJECT:NAME",
                        help="a custom unique-value property, e.g. emails:mailstream_message_id")
    args = parser.parse_args()
    Handler.portal = Portal(args.token, args.unique_property)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"hubspot contract stand-in on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
