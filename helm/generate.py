#!/usr/bin/env python3
"""helm/generate.py — writes the chart's two generated files:

  mailstream/values.schema.json    the JSON schema Helm checks values against at install
  mailstream/files/dashboard.json  the Grafana dashboard (shipped in a ConfigMap)

Both are long, repetitive JSON that is easier to keep right as code: every processor shares one
block of the schema, and every dashboard panel is built the same way. Edit this file, then run
`helm/generate.py`; `helm/generate.py --check` (run by helm/check) fails when a committed file
differs from what this writes (for the schema: in anything but descriptions).

Dashboard metric names: services/runtime/src/metrics.rs (mailstream_records_in_total, ...,
mailstream_consumer_lag, mailstream_consumer_lag_seconds), services/ingest/src/events.rs (mailstream_ingest_*),
services/scorer/src/events.rs (mailstream_scorer_*) and the crm-sink's KPIs (mailstream_crm_*).
"""

import json
import pathlib
import re
import sys

CHART = pathlib.Path(__file__).resolve().parent / "mailstream"

# --- values.schema.json ------------------------------------------------------------------------
# additionalProperties is false almost everywhere: a misspelt key would otherwise be ignored
# silently (the runtime reads only the environment variables of keys it declares).

DNS_NAME = "^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def obj(props, desc=None, **extra):
    o = {"type": "object", "properties": props, "additionalProperties": False}
    if desc:
        o["description"] = desc
    o.update(extra)
    return o


def string(desc=None, **extra):
    o = {"type": "string"}
    if desc:
        o["description"] = desc
    o.update(extra)
    return o


def integer(desc=None, minimum=None, maximum=None):
    o = {"type": "integer"}
    if desc:
        o["description"] = desc
    if minimum is not None:
        o["minimum"] = minimum
    if maximum is not None:
        o["maximum"] = maximum
    return o


def boolean(desc=None):
    return {"type": "boolean", **({"description": desc} if desc else {})}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT = {"type": "object"}
ANY_LIST = {"type": "array"}
SCALAR = {"type": ["string", "number", "boolean"]}
SCALAR_OR_LIST = {"anyOf": [SCALAR, {"type": "array", "items": SCALAR}]}
SECRET_NAME = string("Name of an existing Secret (empty: none).", pattern=DNS_NAME, maxLength=253)
SECRET_KEY = string("Key inside the Secret.", pattern="^[-._a-zA-Z0-9]+$")
SECRET_REF = obj({"name": SECRET_NAME, "key": SECRET_KEY}, "A key of an existing Secret, by reference.")
QUANTITY = {"type": ["string", "number"], "pattern": "^[0-9.]+([eE][0-9]+|[a-zA-Z]{1,2})?$"}
RESOURCE_LIST = {
    "type": "object",
    "properties": {"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY},
    "additionalProperties": QUANTITY,
}
RESOURCES = obj({"requests": RESOURCE_LIST, "limits": RESOURCE_LIST}, "Resource requests and limits.")
PROBE = obj(
    {
        "initialDelaySeconds": integer(minimum=0),
        "periodSeconds": integer(minimum=1),
        "timeoutSeconds": integer(minimum=1),
        "failureThreshold": integer(minimum=1),
        "successThreshold": integer(minimum=1),
    }
)

# Runtime keys (services/runtime/src/config/mod.rs) a deployment may set. The chart sets
# bootstrap_servers, schema_registry_url, topic_prefix, instance_id, http_addr and log_format
# from other values, and the registry credentials come from a Secret.
RUNTIME = obj(
    {
        "batch_max_records": integer("A transaction commits after this many records ...", 1),
        "batch_max_bytes": integer("... or once its input records add up to this many bytes ...", 1),
        "batch_max_ms": integer("... or this many milliseconds after its first record.", 1),
        "batch_idle_ms": integer("... or once no record has arrived for this many milliseconds; 0 turns it off.", 0),
        "transaction_timeout_ms": integer("Broker-side timeout of an open transaction; must exceed twice batch_max_ms.", 1),
        "retry_backoff_max_ms": integer("Upper bound of the backoff between retries of a transient failure.", 0),
        "stall_timeout_ms": integer("/readyz turns not-ready once batches have failed this long without progress; 0 turns the check off.", 0),
        "log_level": string("A tracing filter such as info or info,mailstream_runtime=debug.", minLength=1),
        "otlp_endpoint": string("OTLP/HTTP endpoint for traces; export is off when empty.", pattern="^$|^https?://\\S+$"),
        "static_membership": boolean(
            "Join the consumer group as a static member. Only where instance ids are stable: not with Deployments, whose pod names change."
        ),
    },
    "Runtime keys, each MAILSTREAM_<KEY>. bootstrap_servers, schema_registry_url, topic_prefix, instance_id, "
    "http_addr and log_format are set by the chart from other values.",
)

# What every processor accepts (processorDefaults and processors.<name>).
PROCESSOR = {
    "enabled": boolean("Deploy this processor."),
    "replicas": integer("Replicas when no autoscaler owns them; at most the input topic's partition count.", 0),
    "runtime": {"$ref": "#/$defs/runtime"},
    "config": {
        "type": "object",
        "description": "The processor's own keys, each MAILSTREAM_<PROCESSOR>_<KEY>.",
        "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
        "additionalProperties": SCALAR_OR_LIST,
    },
    "env": {
        "type": "object",
        "description": "Further plain environment variables.",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": SCALAR,
    },
    "extraEnv": {
        "type": "array",
        "description": "Further EnvVar entries (e.g. valueFrom.secretKeyRef).",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
        },
    },
    "resources": RESOURCES,
    "autoscaling": obj(
        {
            "mode": {"enum": ["none", "hpa", "keda"], "description": "none, hpa (CPU) or keda (consumer lag; needs KEDA)."},
            "minReplicas": integer(None, 0),
            "maxReplicas": integer("0: the input topic's partition count.", 0),
            "targetCPUUtilizationPercentage": integer(None, 1, 100),
            "lagThreshold": integer("KEDA: target consumer lag per replica.", 1),
            "activationLagThreshold": integer("KEDA: lag above which the processor scales up from minReplicas.", 0),
            "pollingInterval": integer(None, 1),
            "cooldownPeriod": integer(None, 0),
            "lagSeconds": obj(
                {
                    "prometheusAddress": string("Prometheus base URL KEDA queries; empty: no lag-seconds trigger."),
                    "threshold": integer("Target age in seconds of the oldest uncommitted input record, per replica.", 1),
                },
                "KEDA: a second trigger on mailstream_consumer_lag_seconds (the worst partition of the processor's input).",
            ),
        }
    ),
    "pdb": obj({"enabled": boolean(), "maxUnavailable": {"anyOf": [integer(minimum=1), string(pattern="^[0-9]+%$")]}}),
    "terminationGracePeriodSeconds": integer(None, 0),
    "probes": obj(
        {"liveness": PROBE, "readiness": PROBE, "startup": PROBE},
        "Of /healthz (liveness, and startup: liveness waits until it succeeds once) and /readyz.",
    ),
    "podAnnotations": STRING_MAP,
    "podLabels": STRING_MAP,
    "nodeSelector": STRING_MAP,
    "tolerations": ANY_LIST,
    "affinity": ANY_OBJECT,
    "topologySpreadConstraints": ANY_LIST,
    "priorityClassName": string(),
}


def processor(extra=None):
    """A processor's schema: the shared keys plus its own, nothing else."""
    return obj({**PROCESSOR, **(extra or {})})


# --- processor config keys, from the Rust settings structs ---------------------------------------
# Each processor's `config` map becomes MAILSTREAM_<PROCESSOR>_<KEY> variables, and the runtime
# ignores variables of keys it does not declare: a misspelt key would be lost silently. So the
# schema allows exactly the keys of the processor's settings struct, minus those the chart sets
# itself or that are secrets. The keys, their types, bounds, enums and descriptions come from the
# JSON Schema `schemars` derives from each struct (`helm/settings.schema.json`, which a test of
# services/ctl keeps current); when a struct changes, that test and then
# `helm/generate.py --check` fail until both are re-run.
REPO = CHART.parent.parent
SETTINGS_SCHEMA = REPO / "helm" / "settings.schema.json"
SETTINGS = {
    # processor: (struct, keys the chart owns or that are secrets -> what to use)
    "ingest": (
        "IngestSettings",
        {
            "smtp_addr": "smtp.enabled",
            "http_addr": "http.enabled",
            "tls_cert_path": "smtp.tlsSecret",
            "tls_key_path": "smtp.tlsSecret",
            "http_client_ca_path": "http.clientCaSecret",
            "ses_certificate_path": "http.sesCertificateSecret",
            "blob_url": "blobStore",
            "hmac_secret": "hmacSecret (a Secret)",
            "mailgun_signing_key": "mailgunSigningKeySecret (a Secret)",
            "sendgrid_password": "sendgridPasswordSecret (a Secret)",
            "postmark_password": "postmarkPasswordSecret (a Secret)",
        },
    ),
    "parser": ("ParserSettings", {"blob_url": "blobStore"}),
    "resolver": ("ResolverSettings", {}),
    "scorer": ("ScorerSettings", {"rules_file": "rules"}),
    "crm-sink": (
        "CrmSinkSettings",
        {
            "token": "tokenSecret (a Secret)",
            "database_url": "databaseUrlSecret (a Secret)",
            "database_ca_file": "databaseCaSecret (a Secret)",
        },
    ),
    "notifier": (
        "NotifierSettings",
        {
            "slack_webhook_url": "slackWebhookUrlSecret (a Secret)",
            "webhook_secret": "webhookSecret (a Secret)",
        },
    ),
}


def value_schema(prop, defs):
    """A settings field's schema as the chart takes it: `$ref`s inlined, Rust's integer formats
    dropped (not JSON Schema's), `null` (an unset Option) left out, and plain strings widened to
    any scalar: a value reaches the processor as the text of an environment variable. Its
    description and default are the struct's (doc comment, serde default)."""
    prop = dict(prop)
    ref = prop.pop("$ref", None)
    if ref:
        prop = {**defs[ref.rsplit("/", 1)[-1]], **prop}
    prop.pop("format", None)
    if prop.get("default", 0) is None:
        del prop["default"]  # an unset Option: the key is simply left out
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = [k for k in kind if k != "null"]
        prop["type"] = kind[0] if len(kind) == 1 else kind
    if "enum" in prop:
        prop["enum"] = [v for v in prop["enum"] if v is not None]
    if prop.get("type") == "string" and not {"enum", "pattern", "writeOnly"} & prop.keys():
        prop["type"] = ["string", "number", "boolean"]
    prop.pop("writeOnly", None)
    return prop


def config_schema(processor):
    struct, owned = SETTINGS[processor]
    schema = json.loads(SETTINGS_SCHEMA.read_text())[processor]
    defs = schema.get("$defs", {})
    props = {}
    for name, prop in schema["properties"].items():
        if name in owned:
            continue
        prop = value_schema(prop, defs)
        if "description" in prop:
            prop["description"] = " ".join(prop["description"].split())
        props[name] = prop
    owned_text = "; ".join(f"{k} comes from {v}" for k, v in owned.items())
    return obj(
        props,
        f"{processor}'s keys (MAILSTREAM_{processor.upper().replace('-', '_')}_<KEY>), from {struct}."
        + (f" Not here: {owned_text}." if owned else ""),
    )


def values_schema():
    ingest = processor(
        {
            "config": config_schema("ingest"),
            "smtp": obj({"enabled": boolean("SMTP intake on container port 2525."), "tlsSecret": SECRET_NAME}),
            "http": obj(
                {
                    "enabled": boolean("HMAC-signed HTTP intake on container port 8025."),
                    "clientCaSecret": SECRET_NAME,
                    "sesCertificateSecret": SECRET_NAME,
                }
            ),
            "hmacSecret": SECRET_REF,
            "mailgunSigningKeySecret": SECRET_REF,
            "sendgridPasswordSecret": SECRET_REF,
            "postmarkPasswordSecret": SECRET_REF,
            "service": obj(
                {
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "smtpPort": integer(None, 1, 65535),
                    "httpPort": integer(None, 1, 65535),
                    "annotations": STRING_MAP,
                    "externalTrafficPolicy": {"enum": ["", "Cluster", "Local"]},
                    "loadBalancerSourceRanges": {"type": "array", "items": {"type": "string"}},
                }
            ),
        }
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Values of the mailstream chart",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "global": ANY_OBJECT,
            "nameOverride": string(pattern="^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=40),
            "fullnameOverride": string(pattern="^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=45),
            "commonLabels": STRING_MAP,
            "image": obj(
                {
                    "repository": string(minLength=1),
                    "tag": string(pattern="^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"),
                    "digest": string(pattern="^$|^sha256:[a-f0-9]{64}$"),
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                }
            ),
            "imagePullSecrets": {"type": "array", "items": obj({"name": string(minLength=1)}, required=["name"])},
            "kafka": obj(
                {
                    "bootstrapServers": string(
                        "host:port[,host:port...] (required).", pattern="^$|^[^,\\s]+:[0-9]+(,[^,\\s]+:[0-9]+)*$"
                    ),
                    "securityProtocol": {"enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]},
                    "sasl": obj(
                        {
                            "mechanism": {"enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]},
                            "existingSecret": SECRET_NAME,
                            "usernameKey": SECRET_KEY,
                            "passwordKey": SECRET_KEY,
                        }
                    ),
                    "tls": obj({"caSecret": SECRET_NAME, "caKey": SECRET_KEY, "clientSecret": SECRET_NAME}),
                    "properties": {
                        "type": "object",
                        "description": "Further librdkafka properties (not secrets).",
                        "propertyNames": {"pattern": "^[a-z][a-z0-9]*(\\.[a-z0-9]+)*$"},
                        "additionalProperties": SCALAR,
                    },
                }
            ),
            "schemaRegistry": obj(
                {
                    "url": string("http(s):// URL (required).", pattern="^$|^https?://\\S+$"),
                    "existingSecret": SECRET_NAME,
                    "usernameKey": SECRET_KEY,
                    "passwordKey": SECRET_KEY,
                    "caSecret": SECRET_NAME,
                    "caKey": SECRET_KEY,
                }
            ),
            "topicPrefix": string("Prefix of topics, groups and transactional ids.", pattern="^[A-Za-z0-9._-]*$", maxLength=100),
            "erasure": obj({"keySecret": SECRET_NAME, "keyKey": SECRET_KEY}),
            "retention": obj(
                {
                    "enabled": {"type": "boolean"},
                    "schedule": string("Cron schedule of the retention CronJob.", minLength=9),
                    "olderThanDays": {"type": "integer", "minimum": 1, "description": "Leads received longer ago are deleted."},
                    "statuses": {
                        "type": "array",
                        "items": {"enum": ["qualified", "review", "nurture", "excluded"]},
                        "minItems": 1,
                        "uniqueItems": True,
                    },
                    "resources": {"type": "object"},
                }
            ),
            "runtime": {"$ref": "#/$defs/runtime"},
            "blobStore": obj(
                {
                    "url": string(
                        "s3://bucket/prefix, or file:///var/lib/mailstream/... on existingClaim.", pattern="^$|^(s3|file)://\\S+$"
                    ),
                    "existingClaim": string(pattern=DNS_NAME),
                    "options": {
                        "type": "object",
                        "description": "S3 options by object_store's names (not secrets).",
                        "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                        "additionalProperties": SCALAR,
                    },
                    "credentialsSecret": SECRET_NAME,
                    "accessKeyIdKey": SECRET_KEY,
                    "secretAccessKeyKey": SECRET_KEY,
                }
            ),
            "topics": obj(
                {
                    "create": {
                        "enum": ["job", "strimzi", "none"],
                        "description": "job: init hook running mailstream topology apply; strimzi: KafkaTopic resources; none.",
                    },
                    "job": obj(
                        {
                            "backoffLimit": integer(None, 0),
                            "activeDeadlineSeconds": integer(None, 1),
                            "resources": RESOURCES,
                            "podAnnotations": STRING_MAP,
                        }
                    ),
                    "strimzi": obj(
                        {
                            "apiVersion": {"enum": ["kafka.strimzi.io/v1beta2", "kafka.strimzi.io/v1"]},
                            "clusterName": string(pattern=DNS_NAME),
                            "namespace": string(pattern="^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
                            "replicas": integer("0: the topology's replication factor.", 0),
                        }
                    ),
                }
            ),
            "serviceAccount": obj({"create": boolean(), "name": string(pattern=DNS_NAME), "annotations": STRING_MAP}),
            "securityContext": obj(
                {"runAsUser": integer("Non-root.", 1), "runAsGroup": integer(None, 1), "fsGroup": integer(None, 1)}
            ),
            "processorDefaults": processor(),
            "processors": {
                "type": "object",
                "description": "Per-processor overrides; keys are processor names of topology.yaml.",
                "properties": {
                    "ingest": ingest,
                    "parser": processor({"config": config_schema("parser")}),
                    "resolver": processor({"config": config_schema("resolver")}),
                    "scorer": processor(
                        {
                            "config": config_schema("scorer"),
                            "rules": obj(
                                {
                                    "inline": string("The scoring rules as YAML (the chart's ConfigMap); empty: none."),
                                    "configMap": string("An existing ConfigMap holding the rules; empty: none.", pattern=DNS_NAME),
                                    "key": string("The rules' key in the ConfigMap (.yaml, .yml or .toml).", pattern="^[-._a-zA-Z0-9]+\\.(yaml|yml|toml)$"),
                                },
                                "Scoring rules mounted as MAILSTREAM_SCORER_RULES_FILE; both empty: the rules built into the binary.",
                            ),
                        }
                    ),
                    "crm-sink": processor(
                        {
                            "config": config_schema("crm-sink"),
                            "tokenSecret": SECRET_REF,
                            "databaseUrlSecret": SECRET_REF,
                            "databaseCaSecret": SECRET_NAME,
                        }
                    ),
                    # optional in topology.yaml: deployed only when its own `enabled` is true.
                    "notifier": processor(
                        {
                            "config": config_schema("notifier"),
                            "slackWebhookUrlSecret": SECRET_REF,
                            "webhookSecret": SECRET_REF,
                        }
                    ),
                },
                "propertyNames": {"pattern": "^[a-z][a-z0-9-]*$"},
                # A processor the chart does not know yet; the templates refuse names that are
                # not in topology.yaml.
                "additionalProperties": processor(),
            },
            "metrics": obj(
                {
                    "service": obj({"enabled": boolean()}),
                    "serviceMonitor": obj(
                        {
                            "enabled": boolean(),
                            "interval": string(pattern="^[0-9]+(ms|s|m|h)$"),
                            "scrapeTimeout": string(pattern="^$|^[0-9]+(ms|s|m|h)$"),
                            "labels": STRING_MAP,
                        }
                    ),
                    "dashboard": obj(
                        {
                            "enabled": boolean(),
                            "namespace": string(pattern="^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
                            "labels": STRING_MAP,
                            "annotations": STRING_MAP,
                        }
                    ),
                }
            ),
            "networkPolicy": obj(
                {
                    "enabled": boolean(),
                    "metricsFrom": ANY_LIST,
                    "ingestFrom": ANY_LIST,
                    "egress": obj({"restrict": boolean("Allow only DNS and the rules in `to`."), "to": ANY_LIST}),
                }
            ),
        },
        "$defs": {"runtime": RUNTIME},
    }


# --- dashboard.json ----------------------------------------------------------------------------

DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
GREEN = [{"color": "green", "value": None}]


def sel(extra=""):
    return "{" + NS + ("," + extra if extra else "") + "}"


def rate(metric, by="", extra=""):
    inner = f"rate({metric}{sel(extra)}[$__rate_interval])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def increase(metric, extra=""):
    return f"sum(increase({metric}{sel(extra)}[$__range]))"


def quantile(q, metric, by=""):
    return f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{sel()}[$__rate_interval])))"


# Per partition the newest pod's value: a pod that just lost a partition may still report it.
LAG = f"max by (processor, topic, partition) (mailstream_consumer_lag{sel()})"


class Board:
    """Panels laid out left to right, in rows of 24 columns."""

    def __init__(self):
        self.panels = []
        self.y = 0

    def _add(self, panel, x, w, h):
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": self.y}
        self.panels.append(panel)

    def row(self, title):
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 0, 24, 1)
        self.y += 1

    def next_line(self, h):
        self.y += h

    def series(self, title, targets, unit, x, desc="", w=12, h=8):
        self._add(
            {
                "type": "timeseries",
                "title": title,
                "description": desc,
                "datasource": DS,
                "fieldConfig": {
                    "defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}},
                    "overrides": [],
                },
                "options": {
                    "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": [
                    {"refId": chr(65 + n), "expr": expr, "legendFormat": legend, "datasource": DS}
                    for n, (expr, legend) in enumerate(targets)
                ],
            },
            x,
            w,
            h,
        )

    def stat(self, title, expr, unit, x, desc="", thresholds=None, w=6, h=5):
        self._add(
            {
                "type": "stat",
                "title": title,
                "description": desc,
                "datasource": DS,
                "fieldConfig": {
                    "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": thresholds or GREEN}},
                    "overrides": [],
                },
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "none",
                    "textMode": "auto",
                },
                "targets": [{"refId": "A", "expr": expr, "instant": True, "datasource": DS}],
            },
            x,
            w,
            h,
        )


def dashboard():
    b = Board()
    b.row("Throughput")
    b.series("Records in per second, by processor", [(rate("mailstream_records_in_total", "processor"), "{{processor}}")], "ops", 0,
             "Records consumed from each processor's input topic (mailstream_records_in_total).")
    b.series("Records out per second, by processor and topic",
             [(rate("mailstream_records_out_total", "processor, topic"), "{{processor}} → {{topic}}")], "ops", 12,
             "Records produced, committed or not (mailstream_records_out_total).")
    b.next_line(8)
    b.series("Emails accepted by ingest, by channel", [(rate("mailstream_ingest_accepted_total", "channel"), "{{channel}}")], "ops", 0,
             "Emails durably written to raw-email (mailstream_ingest_accepted_total).")
    b.series("Emails refused by ingest, by channel and reason",
             [(rate("mailstream_ingest_refused_total", "channel, reason"), "{{channel}}: {{reason}}")], "ops", 12,
             "mailstream_ingest_refused_total.")
    b.next_line(8)

    b.row("Lag and dead letters")
    b.series("Consumer lag, by processor and topic", [(f"sum by (processor, topic) ({LAG})", "{{processor}} ({{topic}})")], "short", 0,
             "Records between the committed offset and the end of each partition, summed over partitions (mailstream_consumer_lag).")
    b.series("Dead letters per second, by processor and class",
             [(rate("mailstream_records_dead_lettered_total", "processor, topic, class"), "{{processor}} {{topic}}.dlq: {{class}}")],
             "ops", 12, "Records written to <input>.dlq (mailstream_records_dead_lettered_total).")
    b.next_line(8)
    b.stat("Dead letters in range", increase("mailstream_records_dead_lettered_total"), "short", 0,
           thresholds=GREEN + [{"color": "red", "value": 1}])
    b.stat("Total lag now", f"sum({LAG})", "short", 6, thresholds=GREEN + [{"color": "orange", "value": 10000}])
    b.stat("Aborted transactions in range", increase("mailstream_transactions_total", 'outcome="aborted"'), "short", 12,
           'Aborted transactions: their batches were processed again (mailstream_transactions_total{outcome="aborted"}).',
           GREEN + [{"color": "orange", "value": 1}])
    b.stat("Transient retries in range", increase("mailstream_transient_retries_total"), "short", 18,
           thresholds=GREEN + [{"color": "orange", "value": 1}])
    b.next_line(5)
    b.series("Lag in seconds, by processor and topic",
             [(f"max by (processor, topic) (max by (processor, topic, partition) (mailstream_consumer_lag_seconds{sel()}))",
               "{{processor}} ({{topic}})")], "s", 0,
             "Age of the oldest record not yet committed, over the topic's partitions (mailstream_consumer_lag_seconds): "
             "what an alert on freshness or a lag-in-time autoscaler reads.", w=24)
    b.next_line(8)

    b.row("Latency")
    b.series("Processing time per record p50 / p95, by processor",
             [(quantile(0.5, "mailstream_processing_seconds", "processor"), "p50 {{processor}}"),
              (quantile(0.95, "mailstream_processing_seconds", "processor"), "p95 {{processor}}")], "s", 0,
             "Decode, process and encode one record (mailstream_processing_seconds).")
    b.series("Transaction commit p50 / p95, by processor",
             [(quantile(0.5, "mailstream_transaction_commit_seconds", "processor"), "p50 {{processor}}"),
              (quantile(0.95, "mailstream_transaction_commit_seconds", "processor"), "p95 {{processor}}")], "s", 12,
             "Sending offsets and committing one transaction (mailstream_transaction_commit_seconds).")
    b.next_line(8)
    b.series("Ingest durable write p50 / p95, by channel",
             [(quantile(0.5, "mailstream_ingest_durable_write_seconds", "channel"), "p50 {{channel}}"),
              (quantile(0.95, "mailstream_ingest_durable_write_seconds", "channel"), "p95 {{channel}}")], "s", 0,
             "From the start of an email's write (blob + Kafka) to the broker's acknowledgement (mailstream_ingest_durable_write_seconds).")
    b.series("Transactions per second, by processor and outcome",
             [(rate("mailstream_transactions_total", "processor, outcome"), "{{processor}} {{outcome}}")], "ops", 12,
             "mailstream_transactions_total.")
    b.next_line(8)

    b.row("Scorer")
    b.stat("Scorer rules valid", f"min(mailstream_scorer_rules_valid{sel()})", "short", 0,
           "0 when a scorer pod refused a change of its rules file and still scores with the previous rules (mailstream_scorer_rules_valid).",
           [{"color": "red", "value": None}, {"color": "green", "value": 1}], h=8)
    b.series("Emails scored per second, by status", [(rate("mailstream_scorer_records_total", "status"), "{{status}}")], "ops", 6,
             "Lead status given by the scorer: qualified, review, nurture, excluded (mailstream_scorer_records_total).", w=18)
    b.next_line(8)

    b.row("Sales KPIs")
    scored = "mailstream_scorer_records_total"
    b.stat("Qualification conversion (range)",
           increase(scored, 'status="qualified"') + " / " + increase(scored, 'status!="excluded"'), "percentunit", 0,
           "Leads scored qualified over every email scored as a lead (auto-replies, reports, lists and our own mail excluded; "
           "mailstream_scorer_records_total{status}).")
    first = "mailstream_crm_first_response_seconds_bucket"
    b.stat("Time to first response p50 (range)",
           f"histogram_quantile(0.5, sum by (le) (increase({first}{sel()}[$__range])))", "s", 6,
           "From an inbound email's received_at to the first email of ours in its thread, seen through a journal or BCC "
           "address (resolver our_domains; PostgreSQL CRM: mailstream_crm_first_response_seconds).")
    b.stat("Time to first response p95 (range)",
           f"histogram_quantile(0.95, sum by (le) (increase({first}{sel()}[$__range])))", "s", 12)
    b.stat("Inbound emails answered (range)", increase("mailstream_crm_first_response_seconds_count"), "short", 18,
           "Inbound emails that got their first response from us (mailstream_crm_first_response_seconds_count).")
    b.next_line(5)
    by_source = "mailstream_scorer_leads_by_source_total"
    b.series("Leads per second, by source alias", [(rate(by_source, "source"), "{{source}}")], "ops", 0,
             "Scored (not excluded) emails by the address of ours they came in through: demo@, partners@, a campaign's "
             "demo+spring@ (none: none; other: past a scorer's first 100 addresses; mailstream_scorer_leads_by_source_total).")
    b.series("Qualification conversion, by source alias",
             [(rate(by_source, "source", 'status="qualified"') + " / " + rate(by_source, "source"), "{{source}}")],
             "percentunit", 12, "Qualified leads over all leads of each source alias (mailstream_scorer_leads_by_source_total).")
    b.next_line(8)

    b.row("CRM sink KPIs")
    latency = "mailstream_crm_write_latency_seconds_bucket"
    b.stat("Email → CRM p50 (range)", f"histogram_quantile(0.5, sum by (le) (increase({latency}{sel()}[$__range])))", "s", 0,
           "From received_at to the CRM write (mailstream_crm_write_latency_seconds).")
    b.stat("Email → CRM p95 (range)", f"histogram_quantile(0.95, sum by (le) (increase({latency}{sel()}[$__range])))", "s", 6)
    b.stat("Contact coverage",
           increase("mailstream_crm_contact_coverage_total", 'known="true"') + " / " + increase("mailstream_crm_contact_coverage_total"),
           "percentunit", 12, "Share of emails whose sender was a known contact (mailstream_crm_contact_coverage_total{known}).",
           [{"color": "red", "value": None}, {"color": "orange", "value": 0.5}, {"color": "green", "value": 0.8}])
    b.stat("Attachment success",
           increase("mailstream_crm_attachments_total", 'outcome="ok"') + " / " + increase("mailstream_crm_attachments_total"),
           "percentunit", 18, "Attachments stored in the CRM over all attempted (mailstream_crm_attachments_total{outcome}).",
           [{"color": "red", "value": None}, {"color": "orange", "value": 0.95}, {"color": "green", "value": 0.99}])
    b.next_line(5)
    b.stat("Activities written (range)", increase("mailstream_crm_activities_total"), "short", 0, "mailstream_crm_activities_total.")
    b.stat("Unique messages (range)", increase("mailstream_crm_unique_messages_total"), "short", 6,
           "Distinct messages that reached the CRM (mailstream_crm_unique_messages_total).")
    b.stat("Unique share of accepted emails",
           increase("mailstream_crm_unique_messages_total") + " / " + increase("mailstream_ingest_accepted_total"), "percentunit", 12,
           "Unique messages written to the CRM over emails ingest accepted; the rest are duplicates (or still in flight).")
    b.stat("CRM write failure rate",
           increase("mailstream_crm_write_failures_total") + " / " + increase("mailstream_crm_writes_total"), "percentunit", 18,
           "mailstream_crm_write_failures_total over mailstream_crm_writes_total.",
           GREEN + [{"color": "orange", "value": 0.01}, {"color": "red", "value": 0.05}])
    b.next_line(5)
    b.series("Email → CRM latency p50 / p95",
             [(quantile(0.5, "mailstream_crm_write_latency_seconds"), "p50"),
              (quantile(0.95, "mailstream_crm_write_latency_seconds"), "p95")], "s", 0,
             "From received_at to the CRM write (mailstream_crm_write_latency_seconds).")
    b.series("CRM writes per second, by outcome", [(rate("mailstream_crm_writes_total", "outcome"), "{{outcome}}")], "ops", 12,
             "mailstream_crm_writes_total{outcome}.")
    b.next_line(8)
    b.series("CRM write failures per second, by class", [(rate("mailstream_crm_write_failures_total", "class"), "{{class}}")], "ops", 0,
             "mailstream_crm_write_failures_total{class} (4xx, 5xx).")
    b.series("CRM activities, attachments and unique messages per second",
             [(rate("mailstream_crm_activities_total"), "activities"),
              (rate("mailstream_crm_attachments_total", "outcome"), "attachments {{outcome}}"),
              (rate("mailstream_crm_unique_messages_total"), "unique messages")], "ops", 12)
    b.next_line(8)
    b.series("CRM sink blocked, by cause", [(f"max by (cause) (mailstream_crm_sink_blocked{sel()})", "{{cause}}")], "short", 0,
             "1 while the sink makes no progress because of the CRM: unavailable (down, failing, throttling), auth (credentials "
             "refused: fix the setting its ERROR log names), tls (mailstream_crm_sink_blocked).", w=24)
    b.next_line(8)

    b.row("Notifications")
    b.series("Notifications per second, by channel and outcome",
             [(rate("mailstream_notifications_total", "channel, outcome"), "{{channel}} {{outcome}}")], "ops", 0,
             "Hot-lead notifications: sent, already-sent (a replay or a retried batch found the record), dry-run, dead-lettered "
             "(mailstream_notifications_total).")
    b.series("Leads not notified per second, by reason",
             [(rate("mailstream_notifications_skipped_total", "reason"), "{{reason}}")], "ops", 12,
             "Leads of a notifying status not notified: stale, erased, opted-out (mailstream_notifications_skipped_total).")
    b.next_line(8)
    b.stat("Email → notification p95 (range)",
           f"histogram_quantile(0.95, sum by (le) (increase(mailstream_notification_latency_seconds_bucket{sel()}[$__range])))",
           "s", 0, "From received_at to the channel's acceptance (mailstream_notification_latency_seconds).")
    b.stat("Failed notification requests (range)", increase("mailstream_notification_failures_total"), "short", 6,
           "mailstream_notification_failures_total (retried; a refused message is dead-lettered).",
           GREEN + [{"color": "orange", "value": 1}])
    b.stat("Notifier blocked", f"max(mailstream_notifier_blocked{sel()})", "short", 12,
           "1 while a channel refuses our credentials or is gone: fix the key the ERROR log names (mailstream_notifier_blocked).",
           GREEN + [{"color": "red", "value": 1}])
    b.next_line(5)

    return {
        "uid": "mailstream-pipeline",
        "title": "mailstream pipeline",
        "description": "Throughput, consumer lag, dead letters and latency of the mailstream processors, the CRM sink's KPIs and the notifier's notifications.",
        "tags": ["mailstream", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0, "refresh": 1},
                {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
                 "query": {"query": "label_values(mailstream_records_in_total, namespace)", "refId": "namespace"},
                 "definition": "label_values(mailstream_records_in_total, namespace)",
                 "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0},
            ]
        },
        "annotations": {"list": []},
        "panels": b.panels,
    }


def without_descriptions(node):
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def same(path, text):
    """Whether the committed file says what `text` says. For the schema, descriptions do not
    count: they quote the Rust doc tables, and rewording one should not fail CI (keys and
    types do)."""
    if not path.exists():
        return False
    if path.name == "values.schema.json":
        return without_descriptions(json.loads(path.read_text())) == without_descriptions(json.loads(text))
    return path.read_text() == text


def main():
    files = {
        CHART / "values.schema.json": json.dumps(values_schema(), indent=2) + "\n",
        CHART / "files" / "dashboard.json": json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n",
    }
    if "--check" in sys.argv[1:]:
        stale = [path for path, text in files.items() if not same(path, text)]
        for path in stale:
            print(f"{path} differs from what helm/generate.py writes: run helm/generate.py and commit the result", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(CHART.parent.parent)}")


if __name__ == "__main__":
    main()
