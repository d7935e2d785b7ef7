"""HubSpot's published request shapes, as the stand-in (server.py) checks them.

The models of HubSpot's official Python client (`hubspot-api-client`, generated from HubSpot's
OpenAPI specs) read a body with client-side validation on ([`validate`]), then [`walk`] refuses
what they let through (an int coerced into a string, unknown keys dropped); [`check_value`] holds
property values to what HubSpot takes. The portal's default properties, HubSpot-defined
association type ids and object type ids are here too.
"""

import datetime
import json
import re
import uuid

import hubspot.crm.companies as companies
import hubspot.crm.contacts as contacts
import hubspot.crm.deals as deals
import hubspot.crm.objects.emails as emails

MODULES = {"contacts": contacts, "companies": companies, "deals": deals, "emails": emails}
TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-3": "deals", "0-49": "emails"}
# HubSpot-defined association type ids, by (from, to).
ASSOCIATION_TYPES = {
    ("emails", "contacts"): {198}, ("contacts", "emails"): {197},
    ("emails", "companies"): {186}, ("companies", "emails"): {185},
    ("emails", "deals"): {210}, ("deals", "emails"): {209},
    ("contacts", "companies"): {1, 279}, ("companies", "contacts"): {2, 280},
    ("deals", "contacts"): {3}, ("contacts", "deals"): {4},
    ("deals", "companies"): {5, 341}, ("companies", "deals"): {6, 342},
}
CATEGORIES = {"HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"}
STRING_LIMIT = 65536
TEXT = ("string", None)
# The default properties a fresh portal has that a sink may write: name -> (type, options).
PROPERTIES = {
    "contacts": {p: TEXT for p in ("email", "firstname", "lastname", "phone", "company",
                                   "website", "jobtitle", "hs_lead_status", "lifecyclestage")},
    "companies": {p: TEXT for p in ("domain", "name", "website", "phone", "industry", "city",
                                    "country")},
    "deals": {"dealname": TEXT, "amount": ("number", None), "dealstage": TEXT,
              "pipeline": TEXT, "closedate": ("datetime", None)},
    "emails": {
        "hs_timestamp": ("datetime", None),
        "hs_email_direction": ("enumeration", {"EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"}),
        "hs_email_status": ("enumeration", {"BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT"}),
        "hs_email_subject": TEXT, "hs_email_text": TEXT, "hs_email_html": TEXT,
        "hs_email_headers": TEXT, "hubspot_owner_id": TEXT, "hs_attachment_ids": TEXT,
    },
}
UNIQUE = {"contacts": {"email"}, "companies": {"domain"}, "deals": set(), "emails": set()}


class Violation(Exception):
    """A request HubSpot would refuse: 400 VALIDATION_ERROR with `message`."""


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def hubspot_error(message, category, **extra):
    return dict({"status": "error", "message": message,
                 "correlationId": str(uuid.uuid4()), "category": category}, **extra)


class Body:
    """What the generated ApiClient.deserialize reads: a response with `.data`."""

    def __init__(self, value):
        self.data = json.dumps(value)


def walk(module, kind, value, where):
    """Refuses what the generated models let through: unknown keys and wrong JSON types."""
    if value is None:
        raise Violation(f"{where}: null where {kind} is expected")
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise Violation(f"{where}: expected a JSON array ({kind})")
        for i, item in enumerate(value):
            walk(module, kind[5:-1], item, f"{where}[{i}]")
        return
    if kind.startswith("dict["):
        if not isinstance(value, dict):
            raise Violation(f"{where}: expected a JSON object ({kind})")
        inner = re.match(r"dict\[[^,]*, (.*)\]$", kind).group(1)
        for key, item in value.items():
            walk(module, inner, item, f"{where}.{key}")
        return
    native = {"str": str, "int": int, "float": (int, float), "bool": bool,
              "datetime": str, "date": str}
    if kind in native:
        if isinstance(value, bool) and kind != "bool" or not isinstance(value, native[kind]):
            raise Violation(f"{where}: expected {kind}, got JSON {type(value).__name__}")
        return
    if kind == "object":
        return
    model = getattr(module.models, kind)
    if not isinstance(value, dict):
        raise Violation(f"{where}: expected a JSON object ({kind})")
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            raise Violation(f"{where}: unknown field `{key}` in {kind} (has {sorted(fields)})")
        walk(module, model.openapi_types[fields[key]], item, f"{where}.{key}")


def validate(module, kind, value):
    """Reads `value` as the official client would, with validation on, then walks it."""
    config = module.Configuration()
    config.client_side_validation = True
    try:
        module.ApiClient(configuration=config).deserialize(Body(value), kind)
    except Exception as e:  # the generated code raises ValueError, TypeError, AttributeError
        raise Violation(f"{kind}: {e}") from e
    walk(module, kind, value, kind)


def check_value(kind, options, value):
    """Why HubSpot refuses `value` for a property of `kind`, if it does."""
    if len(value) > STRING_LIMIT:
        return f"{len(value)} characters: over the {STRING_LIMIT}-character limit of a value"
    if kind != "string" and value != value.strip():
        return "leading or trailing whitespace in a non-string value"
    if kind == "enumeration" and value not in options:
        return f"`{value}` is not one of the options {sorted(options)}"
    if kind == "datetime" and not re.fullmatch(r"\d+", value):
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"`{value[:40]}` is neither epoch milliseconds nor an ISO 8601 date-time"
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return f"`{value[:40]}` is not a number"
    return None
