{{/*
mailstream.processorConfig (list $ $p): the plain environment of processor $p (the dict filled by
mailstream.processor), as env-name: "value" lines. It becomes the processor's ConfigMap, and its
checksum rolls the Deployment when it changes. Later lines win over earlier ones, so the order is:
shared settings, runtime keys, what the chart derives, the processor's config keys, then `env`.
*/}}
{{- define "mailstream.processorConfig" -}}
{{- $root := index . 0 -}}
{{- $p := index . 1 -}}
{{- $s := $p.s -}}
{{- $cfg := dict -}}
{{- $common := include "mailstream.commonConfig" $root | fromYaml -}}
{{- range $k, $v := $common }}{{ $_ := set $cfg $k $v }}{{ end -}}
{{- $runtime := deepCopy ($root.Values.runtime | default dict) -}}
{{- range $k, $v := $s.runtime }}{{ $_ := set $runtime $k $v }}{{ end -}}
{{- range $k, $v := $runtime }}{{ $_ := set $cfg (printf "MAILSTREAM_%s" (upper $k)) (include "mailstream.envValue" $v) }}{{ end -}}
{{- /* /metrics, /healthz and /readyz; the probes and the metrics Service use this port. */ -}}
{{- $_ := set $cfg "MAILSTREAM_HTTP_ADDR" "0.0.0.0:8080" -}}
{{- if eq $p.name "ingest" -}}
{{- $_ := set $cfg (printf "%sSMTP_ADDR" $p.envPrefix) (ternary "0.0.0.0:2525" "" (toString $s.smtp.enabled | eq "true")) -}}
{{- $_ := set $cfg (printf "%sHTTP_ADDR" $p.envPrefix) (ternary "0.0.0.0:8025" "" (toString $s.http.enabled | eq "true")) -}}
{{- if and $s.smtp.enabled $s.smtp.tlsSecret -}}
{{- $_ := set $cfg (printf "%sTLS_CERT_PATH" $p.envPrefix) "/etc/mailstream/smtp-tls/tls.crt" -}}
{{- $_ := set $cfg (printf "%sTLS_KEY_PATH" $p.envPrefix) "/etc/mailstream/smtp-tls/tls.key" -}}
{{- end -}}
{{- if and $s.http.enabled $s.http.clientCaSecret -}}
{{- $_ := set $cfg (printf "%sHTTP_CLIENT_CA_PATH" $p.envPrefix) "/etc/mailstream/http-client-ca/ca.crt" -}}
{{- end -}}
{{- if and $s.http.enabled $s.http.sesCertificateSecret -}}
{{- $_ := set $cfg (printf "%sSES_CERTIFICATE_PATH" $p.envPrefix) "/etc/mailstream/ses-certificate/sns.pem" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $p.name "crm-sink") $s.databaseCaSecret -}}
{{- $_ := set $cfg (printf "%sDATABASE_CA_FILE" $p.envPrefix) "/etc/mailstream/database-ca/ca.crt" -}}
{{- end -}}
{{- if and (eq $p.name "scorer") (or $s.rules.inline $s.rules.configMap) -}}
{{- $_ := set $cfg (printf "%sRULES_FILE" $p.envPrefix) (printf "/etc/mailstream/scorer-rules/%s" (ternary "rules.yaml" $s.rules.key (not $s.rules.configMap))) -}}
{{- end -}}
{{- if has $p.name (list "ingest" "parser") -}}
{{- $_ := set $cfg (printf "%sBLOB_URL" $p.envPrefix) (include "mailstream.blobUrl" $root) -}}
{{- end -}}
{{- range $k, $v := $s.config }}{{ $_ := set $cfg (printf "%s%s" $p.envPrefix (upper $k)) (include "mailstream.envValue" $v) }}{{ end -}}
{{- range $k, $v := $s.env }}{{ $_ := set $cfg $k (include "mailstream.envValue" $v) }}{{ end -}}
{{- range $k := keys $cfg | sortAlpha }}
{{ $k }}: {{ index $cfg $k | toString | quote }}
{{- end }}
{{- end }}

{{/*
mailstream.processorSecretEnv (list $ $p): EnvVar entries taken from Secrets by reference, plus
the instance id. Secrets never pass through Helm: only their names and keys are in values.
*/}}
{{- define "mailstream.processorSecretEnv" -}}
{{- $root := index . 0 -}}
{{- $p := index . 1 -}}
{{- $s := $p.s -}}
{{- /* The pod name: unique per pod, so it makes a unique transactional id
       (<prefix>mailstream-<processor>-<instance_id>) and a readable client id. */}}
- name: MAILSTREAM_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- include "mailstream.secretEnv" $root }}
{{- if and (eq $p.name "ingest") $s.http.enabled }}
{{- range $var, $ref := dict "HMAC_SECRET" $s.hmacSecret "MAILGUN_SIGNING_KEY" $s.mailgunSigningKeySecret "SENDGRID_PASSWORD" $s.sendgridPasswordSecret "POSTMARK_PASSWORD" $s.postmarkPasswordSecret }}
{{- if and $ref $ref.name }}
- name: {{ printf "%s%s" $p.envPrefix $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $p.name "crm-sink") $s.tokenSecret.name }}
- name: {{ printf "%sTOKEN" $p.envPrefix }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.tokenSecret.name | quote }}
      key: {{ $s.tokenSecret.key | quote }}
{{- end }}
{{- if and (eq $p.name "crm-sink") $s.databaseUrlSecret.name }}
- name: {{ printf "%sDATABASE_URL" $p.envPrefix }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.databaseUrlSecret.name | quote }}
      key: {{ $s.databaseUrlSecret.key | quote }}
{{- end }}
{{- if eq $p.name "notifier" }}
{{- range $var, $ref := dict "SLACK_WEBHOOK_URL" $s.slackWebhookUrlSecret "WEBHOOK_SECRET" $s.webhookSecret }}
{{- if and $ref $ref.name }}
- name: {{ printf "%s%s" $p.envPrefix $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with $s.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
