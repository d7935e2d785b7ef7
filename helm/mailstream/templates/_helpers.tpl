{{/*
Helpers of the mailstream chart.

Where things come from:
  * files/topology.yaml (a copy of topology/topology.yaml; helm/check fails when they differ):
    which processors exist, which topic each reads, and how many partitions that topic has;
  * values.yaml: everything deployment-specific. processorDefaults apply to every processor and
    processors.<name> overrides them key by key.
*/}}

{{/* The chart name, shortened for label values. */}}
{{- define "mailstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every resource: the release name, plus the chart name unless the release name
already contains it. Processor resources append "-<processor>" to it, so it is cut to leave room
(the longest processor name, crm-sink, plus "-metrics" still fits 63 characters).
*/}}
{{- define "mailstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mailstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "mailstream.labels" -}}
helm.sh/chart: {{ include "mailstream.chart" . }}
app.kubernetes.io/name: {{ include "mailstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (list $ "parser"). They never change after install. */}}
{{- define "mailstream.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "mailstream.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* All labels of one component: (list $ "parser"). */}}
{{- define "mailstream.componentLabels" -}}
{{ include "mailstream.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The image reference; a digest wins over the tag. */}}
{{- define "mailstream.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{ $img.repository }}:{{ $img.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "mailstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mailstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The topology, parsed from the chart's copy of topology/topology.yaml. */}}
{{- define "mailstream.topologyYaml" -}}
{{- $text := .Files.Get "files/topology.yaml" -}}
{{- if not $text -}}
{{- fail "files/topology.yaml is missing from the chart: copy topology/topology.yaml to helm/mailstream/files/topology.yaml (helm/check says so too)" -}}
{{- end -}}
{{- $text -}}
{{- end }}

{{/*
The processors the chart deploys, in name order: every processor of the topology that is not
`optional: true` (the pass-through benchmark baseline is), plus the optional ones the chart
knows how to deploy on request (mailstream.optionalProcessors: the notifier). Printed one per
line; use with `include ... | splitList "\n"` or fill a list with mailstream.processorNames.
*/}}
{{- define "mailstream.optionalProcessors" -}}notifier{{- end }}
{{- define "mailstream.processorNames" -}}
{{- $topo := include "mailstream.topologyYaml" . | fromYaml -}}
{{- $optional := include "mailstream.optionalProcessors" . | splitList "\n" -}}
{{- $names := list -}}
{{- range $name, $p := $topo.processors -}}
{{- if or (not (and (kindIs "map" $p) $p.optional)) (has $name $optional) -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "\n" $names -}}
{{- end }}

{{/*
mailstream.deepMerge (list $dst $src): copies $src into the dict $dst, recursing into maps that
both have. Unlike sprig's merge/mergeOverwrite it keeps false, 0 and "" from $src (mergo treats
them as "empty" and would let the default win, so `enabled: false` would be ignored).
*/}}
{{- define "mailstream.deepMerge" -}}
{{- $dst := index . 0 -}}
{{- range $k, $v := index . 1 -}}
{{- if and (kindIs "map" $v) (kindIs "map" (index $dst $k)) -}}
{{- include "mailstream.deepMerge" (list (index $dst $k) $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
mailstream.processor (list $ $name $out): fills the dict $out with everything the templates need
to know about processor $name, and fails with a message naming the value to fix when its
settings cannot work. (include can only return text, and a YAML round trip would turn numbers
into floats, so the result comes back through $out.)

  $out.name        the processor name (as in topology.yaml)
  $out.s           its settings: processorDefaults deep-merged with processors.<name>
  $out.enabled     whether it is deployed (an optional processor of the topology, the notifier,
                   only when processors.<name>.enabled is true: processorDefaults.enabled does
                   not turn it on)
  $out.fullname    the name of its Deployment, Service, ...
  $out.input       its input topic ("" for ingest, which only produces)
  $out.partitions  the input topic's partition count (0 without input): the most consumers
                   of its group that can have work, so the cap on replicas
  $out.outputs     the topics it writes
  $out.envPrefix   MAILSTREAM_<NAME>_ (its own config keys)
  $out.replicas    the Deployment's replicas (when no autoscaler owns them)
  $out.minReplicas $out.maxReplicas  bounds for the HPA / ScaledObject
*/}}
{{- define "mailstream.processor" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $out := index . 2 -}}
{{- $topo := include "mailstream.topologyYaml" $root | fromYaml -}}
{{- $spec := index $topo.processors $name -}}
{{- $s := deepCopy $root.Values.processorDefaults -}}
{{- include "mailstream.deepMerge" (list $s (index $root.Values.processors $name | default dict)) -}}
{{- $_ := set $out "name" $name -}}
{{- $_ := set $out "s" $s -}}
{{- $own := index $root.Values.processors $name | default dict -}}
{{- if $spec.optional -}}
{{- $_ := set $out "enabled" (eq (toString $own.enabled) "true") -}}
{{- else -}}
{{- $_ := set $out "enabled" (ne (toString $s.enabled) "false") -}}
{{- end -}}
{{- $_ := set $out "fullname" (printf "%s-%s" (include "mailstream.fullname" $root) $name) -}}
{{- $_ := set $out "envPrefix" (printf "MAILSTREAM_%s_" ($name | upper | replace "-" "_")) -}}
{{- $_ := set $out "outputs" ($spec.outputs | default list) -}}
{{- $input := $spec.input | default "" -}}
{{- $_ := set $out "input" $input -}}
{{- $partitions := 0 -}}
{{- if $input -}}
{{- $topic := index $topo.topics $input -}}
{{- if not $topic -}}
{{- fail (printf "files/topology.yaml: processor %s reads topic %s, which the topology does not declare (refresh the copy from topology/topology.yaml)" $name $input) -}}
{{- end -}}
{{- $partitions = int (($topic.partitions | default $topo.defaults.partitions)) -}}
{{- end -}}
{{- $_ := set $out "partitions" $partitions -}}
{{- $path := printf "processors.%s" $name -}}
{{- /* Name the value where it was set: the processor's own, or processorDefaults. */ -}}
{{- $ownAs := $own.autoscaling | default dict -}}
{{- $replicasPath := ternary (printf "%s.replicas" $path) (printf "processorDefaults.replicas (for %s)" $name) (hasKey $own "replicas") -}}
{{- $maxPath := ternary (printf "%s.autoscaling.maxReplicas" $path) (printf "processorDefaults.autoscaling.maxReplicas (for %s)" $name) (hasKey $ownAs "maxReplicas") -}}
{{- $as := $s.autoscaling -}}
{{- $replicas := int $s.replicas -}}
{{- $min := 1 -}}
{{- if hasKey $as "minReplicas" }}{{ $min = int $as.minReplicas }}{{ end -}}
{{- $max := int ($as.maxReplicas | default 0) -}}
{{- if $out.enabled -}}
{{- if gt $partitions 0 -}}
{{- /* A consumer group never gives one partition to two members: consumers beyond the input's
       partition count would sit idle (and still join every rebalance). */ -}}
{{- if gt $replicas $partitions -}}
{{- fail (printf "%s is %d, but the input topic of %s, %s, has %d partitions (files/topology.yaml): consumers beyond the partition count would sit idle. Use at most %d, or give the topic more partitions in topology/topology.yaml." $replicasPath $replicas $name $input $partitions $partitions) -}}
{{- end -}}
{{- if eq $max 0 -}}{{- $max = $partitions -}}{{- end -}}
{{- if gt $max $partitions -}}
{{- fail (printf "%s is %d, but the input topic of %s, %s, has %d partitions (files/topology.yaml): scaling beyond the partition count adds idle consumers. Use at most %d (or 0 for exactly the partition count)." $maxPath $max $name $input $partitions $partitions) -}}
{{- end -}}
{{- else -}}
{{- if eq $as.mode "keda" -}}
{{- fail (printf "%s.autoscaling.mode is keda, but %s reads no topic, so there is no consumer lag to scale on. Use mode hpa (CPU) or none." $path $name) -}}
{{- end -}}
{{- if and (eq $as.mode "hpa") (eq $max 0) -}}
{{- fail (printf "%s.autoscaling.maxReplicas must be set for mode hpa: %s reads no topic, so the partition count cannot bound it." $path $name) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $as.mode "hpa") (lt $min 1) -}}
{{- fail (printf "%s.autoscaling.minReplicas is 0: a HorizontalPodAutoscaler keeps at least 1 replica. Scaling to zero needs mode keda." $path) -}}
{{- end -}}
{{- if and (ne $as.mode "none") (gt $min $max) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) exceeds maxReplicas (%d%s)." $path $min $max (ternary (printf ", the partition count of %s" $input) "" (gt $partitions 0))) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "replicas" $replicas -}}
{{- $_ := set $out "minReplicas" $min -}}
{{- $_ := set $out "maxReplicas" $max -}}
{{- end }}

{{/*
mailstream.envValue: a config value as an environment variable's text. Lists become
comma-separated (the runtime's lenient lists accept that); whole numbers print without an
exponent (Helm reads every number in values files as a float, and 26214400 would otherwise
print as 2.62144e+07).
*/}}
{{- define "mailstream.envValue" -}}
{{- $v := . -}}
{{- if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v }}{{ $items = append $items (include "mailstream.envValue" .) }}{{ end -}}
{{- join "," $items -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end -}}
{{- else if kindIs "invalid" $v -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- end }}

{{/* The librdkafka security protocol in use. */}}
{{- define "mailstream.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end }}
{{- define "mailstream.kafkaTls" -}}
{{- if or (eq .Values.kafka.securityProtocol "SSL") (eq .Values.kafka.securityProtocol "SASL_SSL") }}true{{ end -}}
{{- end }}

{{/*
Plain (non-secret) settings every mailstream process shares, as env-name: value lines; they go
into each processor's ConfigMap and into the init Job. Secrets are never here: see
mailstream.secretEnv.
*/}}
{{- define "mailstream.commonConfig" -}}
MAILSTREAM_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
MAILSTREAM_SCHEMA_REGISTRY_URL: {{ .Values.schemaRegistry.url | quote }}
{{- if .Values.schemaRegistry.caSecret }}
MAILSTREAM_SCHEMA_REGISTRY_CA_FILE: "/etc/mailstream/registry-ca/{{ .Values.schemaRegistry.caKey }}"
{{- end }}
MAILSTREAM_TOPIC_PREFIX: {{ .Values.topicPrefix | quote }}
{{- /* JSON lines for the log pipeline; the runtime's default is text for terminals. */}}
MAILSTREAM_LOG_FORMAT: "json"
MAILSTREAM_RDKAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | lower | quote }}
{{- if include "mailstream.kafkaSasl" . }}
MAILSTREAM_RDKAFKA_SASL_MECHANISMS: {{ .Values.kafka.sasl.mechanism | quote }}
{{- end }}
{{- if include "mailstream.kafkaTls" . }}
{{- if .Values.kafka.tls.caSecret }}
MAILSTREAM_RDKAFKA_SSL_CA_LOCATION: "/etc/mailstream/kafka-ca/{{ .Values.kafka.tls.caKey }}"
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
MAILSTREAM_RDKAFKA_SSL_CERTIFICATE_LOCATION: "/etc/mailstream/kafka-client/tls.crt"
MAILSTREAM_RDKAFKA_SSL_KEY_LOCATION: "/etc/mailstream/kafka-client/tls.key"
{{- end }}
{{- end }}
{{- range $option, $v := .Values.blobStore.options }}
{{ printf "MAILSTREAM_BLOB_STORE_%s" ($option | upper) }}: {{ include "mailstream.envValue" $v | quote }}
{{- end }}
{{- /* The runtime maps MAILSTREAM_RDKAFKA_A_B back to the property a.b. */}}
{{- range $prop, $v := .Values.kafka.properties }}
{{ printf "MAILSTREAM_RDKAFKA_%s" ($prop | upper | replace "." "_") }}: {{ include "mailstream.envValue" $v | quote }}
{{- end }}
{{- end }}

{{/* Runtime keys (MAILSTREAM_<KEY>) from a map: (the map). */}}
{{- define "mailstream.runtimeConfig" -}}
{{- range $k, $v := . }}
{{ printf "MAILSTREAM_%s" ($k | upper) }}: {{ include "mailstream.envValue" $v | quote }}
{{- end }}
{{- end }}

{{/*
Secrets by reference, as EnvVar list items: the Kafka SASL credentials, the registry's, the S3 blob store's and the
erasure key. The
values only name existing Secrets and their keys; the kubelet reads them, Helm never does.
*/}}
{{- define "mailstream.secretEnv" -}}
{{- if include "mailstream.kafkaSasl" . }}
- name: MAILSTREAM_RDKAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret | quote }}
      key: {{ .Values.kafka.sasl.usernameKey | quote }}
- name: MAILSTREAM_RDKAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret | quote }}
      key: {{ .Values.kafka.sasl.passwordKey | quote }}
{{- end }}
{{- with .Values.schemaRegistry.existingSecret }}
- name: MAILSTREAM_SCHEMA_REGISTRY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.schemaRegistry.usernameKey | quote }}
- name: MAILSTREAM_SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.schemaRegistry.passwordKey | quote }}
{{- end }}
{{- with .Values.blobStore.credentialsSecret }}
- name: MAILSTREAM_BLOB_STORE_AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.blobStore.accessKeyIdKey | quote }}
- name: MAILSTREAM_BLOB_STORE_AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.blobStore.secretAccessKeyKey | quote }}
{{- end }}
{{- with .Values.erasure.keySecret }}
- name: MAILSTREAM_ERASURE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.erasure.keyKey | quote }}
{{- end }}
{{- end }}

{{/*
Volumes for the TLS material of the clients every process has: Kafka's (CA bundle, client
certificate) and the schema registry's CA, if any. Readable by the owner and the pod's fsGroup
only (0440), the group the containers run in.
*/}}
{{- define "mailstream.clientVolumes" -}}
{{- with .Values.schemaRegistry.caSecret }}
- name: registry-ca
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- if include "mailstream.kafkaTls" . }}
{{- with .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- with .Values.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{- define "mailstream.clientVolumeMounts" -}}
{{- if .Values.schemaRegistry.caSecret }}
- name: registry-ca
  mountPath: /etc/mailstream/registry-ca
  readOnly: true
{{- end }}
{{- if include "mailstream.kafkaTls" . }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/mailstream/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  mountPath: /etc/mailstream/kafka-client
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod and container security contexts: non-root, read-only root filesystem, no capabilities, the
runtime's default seccomp profile. Not configurable beyond the ids: the image is built for it
(writable paths are volumes) and nothing mailstream does needs more.
*/}}
{{- define "mailstream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mailstream.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The blob store URL for ingest and parser (claim checks and attachments). */}}
{{- define "mailstream.blobUrl" -}}
{{- .Values.blobStore.url | default "file:///var/lib/mailstream/blobs" -}}
{{- end }}
