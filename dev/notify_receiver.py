#!/usr/bin/env python3
"""dev/notify_receiver.py PORT LOG_FILE SECRET — a stand-in for Slack and for a webhook receiver,
used by dev/demo: listens on 127.0.0.1:PORT and answers the notifier's POSTs. POST /slack is
a Slack incoming webhook (Block Kit); POST /webhook is the notifier's generic webhook, whose
signature it checks the way a real receiver would (X-Mailstream-Signature: sha256=<hex
HMAC-SHA256 of "v2\\n{timestamp}\\n\\n\\n{body}"> under SECRET, X-Mailstream-Timestamp within 5
minutes; services/runtime/src/signing.rs), answering 401 when it does not hold. Each request
it accepted is one JSON line in LOG_FILE: {"channel", "signature", "text"} (Slack's fallback
text, or the webhook's event, score and subject).
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_file, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()


def signature_ok(headers, body):
    ts = headers.get("X-Mailstream-Timestamp", "")
    sig = headers.get("X-Mailstream-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > 300 or not sig.startswith("sha256="):
        return False
    mac = hmac.new(secret, b"v2\n" + ts.encode() + b"\n\n\n" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, sig[len("sha256="):])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/slack":
            entry = {"channel": "slack", "signature": "-", "text": json.loads(body).get("text")}
        elif self.path == "/webhook":
            if not signature_ok(self.headers, body):
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            text = "%s score %s: %s" % (event.get("event"), event.get("score"), event.get("subject"))
            entry = {"channel": "webhook", "signature": "valid", "text": text}
        else:
            self.send_response(404)
            self.end_headers()
            return
        with open(log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
