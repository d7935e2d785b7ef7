"""Prints a short, human-readable block per record of `mailstream tail` JSON lines (stdin).

Used by dev/demo. Knows the shapes of the `parsed` and `scored` topics; unknown topics print
their keys. With `--latency`, reads a Prometheus exposition (stdin) instead and prints p50/p95
of the CRM sink's received -> CRM write latency histogram.
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


def scored(v):
    who = v.get("contact_id") or v.get("sender_email") or "?"
    print("- %-9s %4s  %r" % (v.get("status"), v.get("score"), v.get("subject")))
    context = ["lead " + who]
    if v.get("account_id"):
        context.append("account " + v["account_id"])
    if v.get("deal_id"):
        context.append("deal " + v["deal_id"])
    if v.get("tags"):
        context.append("tags: " + ", ".join(v["tags"]))
    print("      " + "; ".join(context))
    hits = sorted(v.get("breakdown") or [], key=lambda h: -abs(h.get("points", 0)))
    for hit in hits[:3]:
        print("      %+4d %s (%s)" % (hit.get("points", 0), hit.get("rule_id"), hit.get("evidence")))


def latency(text, name="mailstream_crm_write_latency_seconds"):
    """p50 and p95 interpolated from a Prometheus histogram's cumulative buckets."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "n/a (no writes measured)"

    def quantile(q):
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return prev_le
                width = count - prev_count
                return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1)
            prev_le, prev_count = le, count
        return prev_le

    return "p50 %.0f ms, p95 %.0f ms (%d writes)" % (quantile(0.5) * 1000, quantile(0.95) * 1000, total)


if "--latency" in sys.argv:
    print(latency(sys.stdin.read()))
    sys.exit(0)

for line in sys.stdin:
    record = json.loads(line)
    value = record.get("value") or {}
    topic = record.get("topic")
    if topic == "parsed":
        parsed(value)
    elif topic == "scored":
        scored(value)
    else:
        print("- %s: %s" % (record.get("key"), ", ".join(sorted(value))))
