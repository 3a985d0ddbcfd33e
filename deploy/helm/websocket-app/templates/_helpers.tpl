{{/*
Expand the name of the chart.
*/}}
{{- define "websocket-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (some Kubernetes name fields are
limited to this, by the DNS naming spec). A release name that contains the chart name is used as is.
*/}}
{{- define "websocket-app.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "websocket-app.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "websocket-app.labels" -}}
helm.sh/chart: {{ include "websocket-app.chart" . }}
{{ include "websocket-app.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "websocket-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "websocket-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "websocket-app.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "websocket-app.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The TLS secret's name.
*/}}
{{- define "websocket-app.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "websocket-app.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then after SIGTERM the shutdown delay, the drain window
and the server's close grace (2 s for the clients' close frames), plus a margin. A shorter grace period
lets the kubelet kill the pod mid-drain and cut the remaining clients abruptly.
*/}}
{{- define "websocket-app.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.server.shutdownDelaySeconds .Values.server.drainTimeoutSeconds 2 .Values.terminationGraceMarginSeconds }}
{{- end }}

{{/*
Whether the Deployment's replicas are owned by something other than the chart: the HPA (directly or
through the ScaleGuard) or the ScaleGuard alone.
*/}}
{{- define "websocket-app.replicasManaged" -}}
{{- if or .Values.autoscaling.enabled .Values.scaleGuard.enabled }}true{{ end }}
{{- end }}

{{/*
The IngressClass name for the ingress* exposures.
*/}}
{{- define "websocket-app.ingressClassName" -}}
{{- if .Values.exposure.ingress.className }}{{ .Values.exposure.ingress.className }}
{{- else if eq .Values.exposure.type "ingressTraefik" }}traefik
{{- else if eq .Values.exposure.type "ingressNginx" }}nginx
{{- else }}haproxy
{{- end }}
{{- end }}

{{/*
The Service's fully qualified host name (Istio destinations).
*/}}
{{- define "websocket-app.serviceFQDN" -}}
{{ include "websocket-app.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/*
Renders annotations with the reason for each one as a YAML comment. Takes a dict with "items", a list of
dicts {k, v, why}, and "extra", the user's annotations; a key the user sets replaces the chart's.
*/}}
{{- define "websocket-app.annotations" -}}
{{- $extra := .extra | default dict }}
{{- range .items }}
{{- if not (hasKey $extra .k) }}
# {{ .why }}
{{ .k }}: {{ .v | quote }}
{{- end }}
{{- end }}
{{- with $extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pod: never the selector labels, or the Service, the PodDisruptionBudget and the
HPA's selector would count the test pod as a server.
*/}}
{{- define "websocket-app.testLabels" -}}
helm.sh/chart: {{ include "websocket-app.chart" . }}
app.kubernetes.io/name: {{ include "websocket-app.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
{{- end }}
