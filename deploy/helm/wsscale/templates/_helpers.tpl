{{/*
Expand the name of the chart.
*/}}
{{- define "wsscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (some name fields are limited to it).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "wsscale.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "wsscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "wsscale.labels" -}}
helm.sh/chart: {{ include "wsscale.chart" . }}
{{ include "wsscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: adapter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "wsscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "wsscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: the digest when one is set, else the tag (the appVersion by default).
*/}}
{{- define "wsscale.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Secret holding the serving certificate (tls.crt, tls.key) in every mode but insecure.
*/}}
{{- define "wsscale.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- required "tls.existingSecret.name is required with tls.mode existingSecret" .Values.tls.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "wsscale.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The DNS names the API server uses to reach the adapter's Service.
*/}}
{{- define "wsscale.serviceDNSNames" -}}
{{- $svc := include "wsscale.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
The APIService versions the chart registers.
*/}}
{{- define "wsscale.apiServiceVersions" -}}
{{- list (dict "version" "v1beta2" "priority" .Values.apiService.v1beta2VersionPriority) (dict "version" "v1beta1" "priority" .Values.apiService.v1beta1VersionPriority) | toJson }}
{{- end }}

{{/*
Labels of the helm test objects: not the selector labels, so that the Service never selects the test pod.
*/}}
{{- define "wsscale.testLabels" -}}
helm.sh/chart: {{ include "wsscale.chart" . }}
app.kubernetes.io/name: {{ include "wsscale.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
{{- end }}
