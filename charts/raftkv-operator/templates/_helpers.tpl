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
Everything the reconciler touches, with only the verbs the code sends, and
nothing more. The same rules go into a ClusterRole (all namespaces) or a Role
(one namespace): see rbac.yaml.
- kvclusters: list/watch them, get the one being reconciled (its status is
  the operator's memory and the watch cache can lag the operator's own last
  status write), add/remove the finalizer (a JSON patch); never create or
  delete them.
- kvclusters/status: written with server-side apply (patch).
- kvbackups: list/watch (the backup controller), get (a restore reads the
  KvBackup it names), create (scheduled backups), patch (the finalizer of
  deletionPolicy Delete), delete (retention); kvbackups/status: patch.
- kvclusters/finalizers: needed to set blockOwnerDeletion on owner references
  where the OwnerReferencesPermissionEnforcement admission plugin is on.
- statefulsets, services, poddisruptionbudgets, networkpolicies, secrets,
  cert-manager certificates: the owned objects, written with server-side apply:
  patch, and create (an apply that creates the object is also checked
  against create). Never update (no read-modify-write) and never delete,
  except the NetworkPolicy once a cluster turns it off.
- statefulsets: get (observe), list/watch (owned objects trigger reconciles),
  delete (with propagationPolicy Orphan, to replace the volume template on a
  volume expansion; the pods stay); services: list/watch only.
- secrets: get the cluster's own CA, node and client certificate Secrets,
  root's password Secret (NAME-root, created once) and the S3 credentials
  Secret a backup names, by name. No list and no watch: those would read
  every Secret in scope.
- pods: list/watch (node endpoints, readiness, template revisions), and
  delete: a rolling upgrade replaces one pod at a time (updateStrategy
  OnDelete).
- jobs (batch): get, create, delete: a backup to a PVC, its deletion and a
  restore from one run as Jobs (kvctl with the claim mounted). Whoever may
  create Jobs may run a pod that mounts any Secret of the namespace; the
  operator's Jobs mount only the cluster's NAME-operator-client Secret and
  the backup claim (operator/src/backup/job.rs).
- persistentvolumeclaims: list; patch (raise the requested size on a volume
  expansion); delete on scale-down or deletion when pvcRetentionPolicy says
  Delete.
- storageclasses (all-namespaces mode only, see rbac.yaml): get, to see
  whether a class allows volume expansion. No list.
- events: both APIs, since the event recorder may use either.
No wildcards.
*/}}
{{- define "raftkv-operator.rules" -}}
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters/status"]
  verbs: ["patch"]
- apiGroups: ["raftkv.io"]
  resources: ["kvbackups"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["raftkv.io"]
  resources: ["kvbackups/status"]
  verbs: ["patch"]
- apiGroups: ["raftkv.io"]
  resources: ["kvclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* The operator pods' labels as `k=v,k=v`, for --operator-pod-labels. */}}
{{- define "raftkv-operator.selectorFlag" -}}
app.kubernetes.io/name={{ include "raftkv-operator.name" . }},app.kubernetes.io/instance={{ .Release.Name }}
{{- end -}}
