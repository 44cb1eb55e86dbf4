{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "flowguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart name it is used alone.
*/}}
{{- define "flowguard.fullname" -}}
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

{{- define "flowguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "flowguard.labels" -}}
helm.sh/chart: {{ include "flowguard.chart" . }}
{{ include "flowguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flowguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable on a StatefulSet: never add to these).
*/}}
{{- define "flowguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flowguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is given, else repository:tag (tag defaults
to the chart's appVersion).
*/}}
{{- define "flowguard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{- define "flowguard.testImage" -}}
{{- if .Values.tests.image.digest -}}
{{- printf "%s@%s" .Values.tests.image.repository .Values.tests.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.tests.image.repository .Values.tests.image.tag -}}
{{- end -}}
{{- end }}

{{/* Secret holding the master key (created by the chart or given as existingSecret). */}}
{{- define "flowguard.masterKeySecretName" -}}
{{- if .Values.masterKey.existingSecret -}}
{{- .Values.masterKey.existingSecret -}}
{{- else -}}
{{- printf "%s-master-key" (include "flowguard.fullname" .) -}}
{{- end -}}
{{- end }}

{{/* Secret holding the license (created by the chart or given as existingSecret). */}}
{{- define "flowguard.licenseSecretName" -}}
{{- if .Values.license.existingSecret -}}
{{- .Values.license.existingSecret -}}
{{- else -}}
{{- printf "%s-license" (include "flowguard.fullname" .) -}}
{{- end -}}
{{- end }}

{{/* True when a license is mounted into the pod. */}}
{{- define "flowguard.hasLicense" -}}
{{- if or .Values.license.existingSecret .Values.license.value -}}true{{- end -}}
{{- end }}

{{/*
Fail early on combinations that would only break at runtime.
*/}}
{{- define "flowguard.validate" -}}
{{- if and .Values.license.required (not (include "flowguard.hasLicense" .)) -}}
{{- fail "license.required is true: set license.existingSecret (a Secret holding the license token) or license.value. Set license.required=false to run as the Free plan." -}}
{{- end -}}
{{- if and (not .Values.masterKey.existingSecret) (not .Values.masterKey.create) -}}
{{- fail "masterKey: set masterKey.existingSecret, or masterKey.create=true to let the chart create the key Secret" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (eq .Values.config.tls.mode "off") (eq .Values.ingress.tlsMode "passthrough") -}}
{{- fail "ingress.tlsMode=passthrough needs config.tls.mode=on: the appliance must terminate TLS itself" -}}
{{- end -}}
{{- end }}

{{/* Scheme the appliance serves. */}}
{{- define "flowguard.scheme" -}}
{{- if eq .Values.config.tls.mode "off" -}}HTTP{{- else -}}HTTPS{{- end -}}
{{- end }}

{{/*
Agent pods: their own name label, so neither the StatefulSet's selector nor the appliance
Service ever matches them.
*/}}
{{- define "flowguard.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "flowguard.name" . }}-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "flowguard.agentLabels" -}}
helm.sh/chart: {{ include "flowguard.chart" . }}
{{ include "flowguard.agentSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.agents.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flowguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "flowguard.agentImage" -}}
{{- if .Values.agents.image.digest -}}
{{- printf "%s@%s" .Values.agents.image.repository .Values.agents.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.agents.image.repository (.Values.agents.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}
