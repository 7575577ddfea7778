{{/* Chart name, overridable. */}}
{{- define "raftkv-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects. A release named like the chart does not
repeat the name ("raftkv-operator", not "raftkv-operator-raftkv-operator").
*/}}
{{- define "raftkv-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "raftkv-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that never change for the life of a release: safe in selectors. */}}
{{- define "raftkv-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raftkv-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "raftkv-operator.labels" -}}
helm.sh/chart: {{ include "raftkv-operator.chart" . }}
{{ include "raftkv-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: raftkv
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "raftkv-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "raftkv-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* One Lease per release, so two releases in one namespace do not share a leader. */}}
{{- define "raftkv-operator.leaseName" -}}
{{- include "raftkv-operator.fullname" . -}}
{{- end -}}

{{- define "raftkv-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Everything the reconciler touches, and nothing more. The same rules go into a
ClusterRole (all namespaces) or a Role (one namespace): see rbac.yaml.
- kvclusters: watch them, add/remove the finalizer (patch/update), never create or delete them.
- kvclusters/finalizers: needed to set blockOwnerDeletion on owner references
  where the OwnerReferencesPermissionEnforcement admission plugin is on.
- statefulsets, services, poddisruptionbudgets: the owned objects, written with server-side apply.
- pods: read-only; the operator finds node endpoints and readiness, it never deletes pods.
- persistentvolumeclaims: delete on scale-down or deletion when pvcRetentionPolicy says Delete.
- events: both APIs, since the event recorder may use either.
No secrets, no wildcards.
*/}}
{{- define "raftkv-operator.rules" -}}
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
