{{/* Name of the chart, overridable with nameOverride. */}}
{{- define "vexa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, overridable with fullnameOverride. */}}
{{- define "vexa.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "vexa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vexa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "vexa.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vexa.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vexa
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "vexa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vexa.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Redis URL handed to dispatch pods. */}}
{{- define "vexa.redisUrl" -}}
{{- default (printf "redis://redis.%s.svc:6379" .Release.Namespace) .Values.redis.url }}
{{- end }}

{{/* What the operator writes in a tenant namespace: each run's Job (created, suspended on a
stop, deleted once over) and the Workspaces' prepare Jobs; each run's Secret (created, read
back when a name is taken, refreshed on a retry, deleted with the run). */}}
{{- define "vexa.tenantRules" -}}
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.spire.enabled }}
# Pod identity: releasing a dispatch pod's scheduling gate once SPIRE has its entry (a JSON
# patch of spec.schedulingGates, guarded by the pod's UID); nothing else of a pod is written.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch"]
{{- end }}
{{- end }}

{{/* Labels that select the MCP gateway's pods. */}}
{{- define "vexa.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "vexa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* Labels of the MCP gateway's objects. */}}
{{- define "vexa.gatewayLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vexa.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vexa
{{- end }}

{{/* The MCP gateway's URL as dispatch pods reach it (its Service). */}}
{{- define "vexa.gatewayUrl" -}}
{{- printf "https://%s-gateway.%s.svc:%d" (include "vexa.fullname" .) .Release.Namespace (int .Values.gateway.port) }}
{{- end }}

{{/* Where the mailboxes' passwords (mail.existingSecret) are mounted in the operator's pod. */}}
{{- define "vexa.mailPasswordDir" -}}
/var/run/vexa/mail-passwords
{{- end }}

{{/*
The operator's --mail-config (operator/src/mail.rs) from mail.mailboxes: each entry as given,
without passwordKey, with passwordFile pointing at its key of mail.existingSecret. Checked here
so a mistake fails the install rather than leaving email triggers silently off.
*/}}
{{- define "vexa.mailConfig" -}}
{{- $m := .Values.mail }}
{{- $pollSeconds := int $m.pollSeconds }}
{{- if or (lt $pollSeconds 1) (gt $pollSeconds 3600) }}
{{- fail (printf "mail.pollSeconds must be between 1 and 3600, not %v" $m.pollSeconds) }}
{{- end }}
{{- if and $m.mailboxes (not $m.existingSecret) }}
{{- fail "mail.existingSecret: the Secret holding the mailboxes' passwords (one key per mailbox) is required with mail.mailboxes" }}
{{- end }}
{{- $ids := dict }}
{{- $mailboxes := list }}
{{- range $i, $mb := $m.mailboxes }}
{{- range $field := list "id" "owner" "address" "username" }}
{{- if not (index $mb $field) }}
{{- fail (printf "mail.mailboxes[%d].%s is required" $i $field) }}
{{- end }}
{{- end }}
{{- range $server := list "imap" "smtp" }}
{{- $s := index $mb $server | default dict }}
{{- if not (and $s.host $s.port) }}
{{- fail (printf "mail.mailboxes[%d].%s needs host and port" $i $server) }}
{{- end }}
{{- end }}
{{- if hasKey $mb "passwordFile" }}
{{- fail (printf "mail.mailboxes[%d]: set passwordKey (a key of mail.existingSecret), not passwordFile" $i) }}
{{- end }}
{{- if hasKey $ids (toString $mb.id) }}
{{- fail (printf "mail.mailboxes: the id %q appears twice" (toString $mb.id)) }}
{{- end }}
{{- $_ := set $ids (toString $mb.id) true }}
{{- $key := $mb.passwordKey | default $mb.id | toString }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $key) }}
{{- fail (printf "mail.mailboxes[%d]: %q is not a Secret key (letters, digits, '-', '_', '.'): set passwordKey" $i $key) }}
{{- end }}
{{- $entry := omit $mb "passwordKey" }}
{{- $_ := set $entry "passwordFile" (printf "%s/%s" (include "vexa.mailPasswordDir" $) $key) }}
{{- $mailboxes = append $mailboxes $entry }}
{{- end }}
{{- dict "mailboxes" $mailboxes | toYaml }}
{{- end }}

{{/* Labels that select the web console's pods. */}}
{{- define "vexa.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "vexa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end }}

{{/* Labels of the web console's objects. */}}
{{- define "vexa.consoleLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vexa.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vexa
{{- end }}
