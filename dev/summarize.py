"""Prints a short, human-readable line block per record of `mailstream tail` JSON lines (stdin).

Used by dev/demo. Knows the shapes of the `parsed` topic; unknown topics print their keys.
"""
import json
import sys


def parsed(v):
    sender = (v.get("from") or {}).get("email", "?")
    flags = [k for k in ("auto_reply", "bounce", "list") if v.get(k)]
    atts = ", ".join(
        "%s (%s)" % (a.get("filename"), a.get("sniffed_type") or a.get("content_type"))
        for a in v.get("attachments") or []
    )
    auth = v.get("auth") or {}
    new = " ".join((v.get("stripped_text") or "").split())
    print("- %s" % v.get("message_id"))
    print("    from %s: %r" % (sender, v.get("subject")))
    extra = "spf=%s dkim=%s" % (auth.get("spf"), auth.get("dkim"))
    if flags:
        extra += "  flags: " + ", ".join(flags)
    if atts:
        extra += "  attachments: " + atts
    print("    " + extra)
    print("    new text: %r" % new[:100])


for line in sys.stdin:
    record = json.loads(line)
    value = record.get("value") or {}
    if record.get("topic") == "parsed":
        parsed(value)
    else:
        print("- %s: %s" % (record.get("key"), ", ".join(sorted(value))))
