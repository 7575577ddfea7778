#!/usr/bin/env bash
# Smoke test of the local Kubernetes environment (tests/local-k8s.sh up must have run).
# A StatefulSet of the test image `test/http-echo` (a tiny python HTTP server, see
# tests/kubelet/images.json) with a headless Service and volumeClaimTemplates:
# pods Ready, PVCs Bound, DNS names between pods, a ServiceAccount token that
# works against the API, data surviving a pod deletion, data gone after pod +
# PVC deletion, kubectl logs, termination messages, and cleanup. Prints each
# step with its duration; exits non-zero on the first failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$HERE/local-k8s.sh" env)"
NS=${SMOKE_NAMESPACE:-raftkv-smoke}
K="kubectl -n $NS"
T_ALL=$SECONDS
STEP_T0=$SECONDS
STEP_NAME=

PASSED=0
step() {
  if [ -n "$STEP_NAME" ]; then
    printf '[smoke] ok   %-62s %3ds\n' "$STEP_NAME" $((SECONDS - STEP_T0))
    PASSED=$((PASSED + 1))
  fi
  STEP_NAME=$1
  STEP_T0=$SECONDS
  printf '[smoke] ...  %s\n' "$1"
}
fail() {
  printf '[smoke] FAIL %s: %s\n' "$STEP_NAME" "$*" >&2
  $K get pods,pvc -o wide >&2 2>/dev/null || true
  tail -30 "$RAFTKV_STATE/logs/kubelet.log" >&2 2>/dev/null || true
  exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || { printf "[smoke] FAILED in step: %s (exit %d)\n" "$STEP_NAME" $rc >&2; printf "smoke: %d passed, 1 failed\n" "$PASSED"; }' EXIT

# until TIMEOUT CMD...: retry CMD every 0.5 s
until_ok() {
  local timeout=$1 t0=$SECONDS; shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < timeout)) || return 1
    sleep 0.5
  done
}
pod_ip() { $K get pod "$1" -o 'jsonpath={.status.podIP}'; }
pod_uid() { $K get pod "$1" -o 'jsonpath={.metadata.uid}' 2>/dev/null; }
pod_ready() { [ "$($K get pod "$1" -o 'jsonpath={.status.phase}/{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = Running/True ]; }
http() { curl -sf --max-time 5 "$@"; }
new_pod_ready() { # pod old-uid
  local uid; uid=$(pod_uid "$1") || return 1
  [ -n "$uid" ] && [ "$uid" != "$2" ] && pod_ready "$1"
}

step "namespace $NS is fresh"
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
kubectl create namespace "$NS" >/dev/null
# shellcheck disable=SC2086 # K is "kubectl -n NS"
until_ok 60 $K get serviceaccount default -o 'jsonpath={.secrets[0].name}' || fail "no default ServiceAccount token in $NS"

step "apply headless Service + StatefulSet (2 replicas, volumeClaimTemplates)"
$K apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: echo-peer}
spec:
  clusterIP: None
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: echo}
spec:
  serviceName: echo-peer
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: test/http-echo:1
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: PORT, value: "8080"}
        - {name: DATA_DIR, value: "/data/$(POD_NAME)"}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1, failureThreshold: 2}
        livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2, failureThreshold: 3, initialDelaySeconds: 1}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Mi}}
YAML

step "pods echo-0 and echo-1 Running and Ready"
until_ok 120 pod_ready echo-0 || fail "echo-0 not ready"
until_ok 120 pod_ready echo-1 || fail "echo-1 not ready"

step "PVCs data-echo-0 and data-echo-1 Bound"
for p in data-echo-0 data-echo-1; do
  [ "$($K get pvc $p -o 'jsonpath={.status.phase}')" = Bound ] || fail "$p not Bound"
done

step "host reaches pods by IP; downward API env and hostname"
IP0=$(pod_ip echo-0); IP1=$(pod_ip echo-1)
echo "        echo-0=$IP0 echo-1=$IP1"
[ "$(http "http://$IP0:8080/whoami" | cut -d' ' -f1,2)" = "echo-0 echo-0" ] || fail "echo-0 /whoami: $(http "http://$IP0:8080/whoami" || true)"
[ "$(http "http://$IP1:8080/whoami" | cut -d' ' -f1,2)" = "echo-1 echo-1" ] || fail "echo-1 /whoami"

step "echo-0 resolves and reaches echo-1.echo-peer.$NS.svc.cluster.local (and short forms)"
for name in "echo-1.echo-peer.$NS.svc.cluster.local" "echo-1.echo-peer.$NS.svc" "echo-1.echo-peer" "echo.$NS.svc.cluster.local" echo; do
  out=$(http "http://$IP0:8080/fetch?url=http://$name:8080/whoami") || fail "fetch via $name failed: $out"
  case "$out" in echo-1*|echo-0*) ;; *) fail "unexpected answer via $name: $out" ;; esac
done
out=$("$HERE/local-k8s.sh" exec "$NS" echo-1 -- getent hosts "echo-0.echo-peer.$NS.svc.cluster.local") || fail "getent in echo-1"
[ "$(echo "$out" | awk '{print $1}')" = "$IP0" ] || fail "echo-1 resolves echo-0 to $out, want $IP0"

step "ServiceAccount token and CA are mounted and accepted by the API server"
rc=0
"$HERE/local-k8s.sh" exec "$NS" echo-0 -- sh -c '
  d=/var/run/secrets/kubernetes.io/serviceaccount
  [ "$(cat $d/namespace)" = "'"$NS"'" ] || exit 1
  curl -sf --max-time 5 --cacert $d/ca.crt -H "Authorization: Bearer $(cat $d/token)" \
    "https://kubernetes.default.svc/api/v1/namespaces/'"$NS"'/pods" >/dev/null && exit 9
  curl -sf --max-time 5 --cacert $d/ca.crt -H "Authorization: Bearer $(cat $d/token)" https://kubernetes.default.svc/version >/dev/null
' || rc=$?
# exit 9: listing pods worked, which the default ServiceAccount must not be allowed to do (RBAC)
[ $rc = 0 ] || fail "token check in pod exited $rc"

step "API server proxy to a pod and to a Service (works on kind too)"
out=$(kubectl get --raw "/api/v1/namespaces/$NS/pods/echo-0:8080/proxy/whoami") || fail "pod proxy"
[ "$(echo "$out" | cut -d' ' -f1)" = echo-0 ] || fail "pod proxy answered: $out"
out=$(kubectl get --raw "/api/v1/namespaces/$NS/services/echo:http/proxy/whoami") || fail "service proxy"
case "$out" in echo-*) ;; *) fail "service proxy answered: $out" ;; esac

step "CustomResourceDefinition with a schema; create, patch and read a custom resource"
# (an API server built against an old reflect2 crashes right here)
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.raftkv.io}
spec:
  group: smoke.raftkv.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {anyOf: [{type: integer}, {type: string}], x-kubernetes-int-or-string: true}
              labels: {type: object, additionalProperties: {type: string}}
YAML
until_ok 30 kubectl get --raw /apis/smoke.raftkv.io/v1 || fail "CRD not served"
$K apply -f - >/dev/null <<'YAML' || fail "create custom resource"
apiVersion: smoke.raftkv.io/v1
kind: Widget
metadata: {name: w1, labels: {a: b}, annotations: {note: hello}}
spec: {size: 1Gi, labels: {k: v}}
YAML
$K patch widget w1 --type=merge -p '{"spec":{"size":3}}' >/dev/null || fail "patch custom resource"
[ "$($K get widget w1 -o 'jsonpath={.spec.size}')" = 3 ] || fail "custom resource not updated"
kubectl delete crd widgets.smoke.raftkv.io >/dev/null || fail "delete CRD"
api_ok() { kubectl get --raw /readyz >/dev/null; }
api_ok || fail "API server unhealthy after custom resources"

step "kubectl logs (served by the process kubelet)"
out=$($K logs echo-0 --tail=200) || fail "kubectl logs failed"
grep -q "http-echo echo-0 listening" <<< "$out" || fail "kubectl logs echo-0 lacks the start line"

step "write a file on echo-1, delete the pod: it comes back with its data"
http -X PUT --data-binary "marker-$$" "http://$IP1:8080/file/marker" >/dev/null || fail "PUT marker"
UID1=$(pod_uid echo-1)
$K delete pod echo-1 --wait=false >/dev/null
until_ok 120 new_pod_ready echo-1 "$UID1" || fail "echo-1 did not come back"
IP1=$(pod_ip echo-1)
[ "$(http "http://$IP1:8080/file/marker")" = "marker-$$" ] || fail "marker lost after pod deletion"
[ "$(http "http://$IP1:8080/whoami" | cut -d' ' -f3)" = 2 ] || fail "expected 2 boots of echo-1's data dir"

step "delete echo-1 together with its PVC: it comes back with an empty volume"
OLD_PV=$($K get pvc data-echo-1 -o 'jsonpath={.spec.volumeName}')
UID1=$(pod_uid echo-1)
$K delete pvc data-echo-1 --wait=false >/dev/null
$K delete pod echo-1 --wait=false >/dev/null
# As in any Kubernetes: if the StatefulSet recreates the pod before the old PVC is
# gone, the new pod waits for a PVC that no longer exists; delete it once more.
t0=$SECONDS
until new_pod_ready echo-1 "$UID1"; do
  ((SECONDS - t0 < 180)) || fail "echo-1 did not come back with a new volume"
  if ! $K get pvc data-echo-1 >/dev/null 2>&1 && [ "$($K get pod echo-1 -o 'jsonpath={.status.phase}' 2>/dev/null)" = Pending ]; then
    echo "        new echo-1 waits for the deleted PVC: deleting the pod again"
    UID1=$(pod_uid echo-1)
    $K delete pod echo-1 --wait=false >/dev/null 2>&1 || true
    sleep 1
  fi
  sleep 0.5
done
IP1=$(pod_ip echo-1)
[ "$($K get pvc data-echo-1 -o 'jsonpath={.spec.volumeName}')" != "$OLD_PV" ] || fail "same PV after PVC deletion"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$IP1:8080/file/marker")
[ "$code" = 404 ] || fail "marker still present after PVC deletion (HTTP $code)"
[ "$(http "http://$IP1:8080/whoami" | cut -d' ' -f3)" = 1 ] || fail "expected a fresh data dir"
until_ok 30 test ! -e "$RAFTKV_STATE/pv/$OLD_PV" || fail "directory of released PV $OLD_PV still exists"

step "readiness probe failure makes the pod NotReady, recovery makes it Ready"
http -X PUT --data-binary x "http://$IP0:8080/file/notready" >/dev/null
until_ok 30 sh -c "! kubectl -n $NS get pod echo-0 -o 'jsonpath={.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True" || fail "echo-0 still Ready"
"$HERE/local-k8s.sh" exec "$NS" echo-0 -- rm -f /data/echo-0/notready
until_ok 30 pod_ready echo-0 || fail "echo-0 did not become Ready again"

step "crash restarts the container (restartCount 1), liveness failure restarts it again"
http "http://$IP0:8080/exit?code=3" >/dev/null || true
until_ok 30 sh -c "[ \"\$(kubectl -n $NS get pod echo-0 -o 'jsonpath={.status.containerStatuses[0].restartCount}')\" = 1 ]" || fail "no restart after crash"
[ "$($K get pod echo-0 -o 'jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}')" = 3 ] || fail "lastState exit code"
until_ok 30 pod_ready echo-0 || fail "echo-0 not Ready after crash"
http -X PUT --data-binary x "http://$IP0:8080/file/unhealthy" >/dev/null
until_ok 30 sh -c "[ \"\$(kubectl -n $NS get pod echo-0 -o 'jsonpath={.status.containerStatuses[0].restartCount}')\" -ge 2 ]" || fail "no restart after liveness failure"
"$HERE/local-k8s.sh" exec "$NS" echo-0 -- rm -f /data/echo-0/unhealthy || true
until_ok 30 pod_ready echo-0 || fail "echo-0 not Ready after liveness restart"

step "init container, configMap/secret env and volumes, emptyDir on /tmp, exec startup probe, restartPolicy Never"
$K apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {pw: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: features}
spec:
  initContainers:
  - {name: init, image: busybox, command: [sh, -c, "echo init-ran > /scratch/init.txt"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
  containers:
  - name: c
    image: test/http-echo
    env:
    - {name: DATA_DIR, value: /tmp/data}
    - {name: G, valueFrom: {configMapKeyRef: {name: cm, key: greeting}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: sec, key: pw}}}
    startupProbe: {exec: {command: [test, -f, /scratch/init.txt]}, periodSeconds: 1}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: tmp, mountPath: /tmp}
    - {name: cmv, mountPath: /scratch/cm, readOnly: true}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: tmp, emptyDir: {}}
  - {name: cmv, configMap: {name: cm}}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox, command: [sh, -c, "echo $(MSG); exit 4"], env: [{name: MSG, value: bye}]}]
YAML
until_ok 60 pod_ready features || fail "pod features not Ready"
out=$("$HERE/local-k8s.sh" exec "$NS" features -- sh -c 'cat /scratch/init.txt /scratch/cm/greeting; echo; wc -l < /tmp/data/boots; if touch /scratch/cm/x 2>/dev/null; then echo writable; fi') || fail "exec in pod features"
# shellcheck disable=SC2086,SC2116 # echo joins the lines and trims the blanks
[ "$(echo $out)" = "init-ran hello 1" ] || fail "features pod sees: $out"
until_ok 30 sh -c "[ \"\$(kubectl -n $NS get pod once -o 'jsonpath={.status.phase}')\" = Failed ]" || fail "pod once not Failed"
[ "$($K get pod once -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')" = 4 ] || fail "pod once exit code"
[ "$($K logs once | tail -1)" = bye ] || fail "logs of pod once"

step "termination messages: /dev/termination-log, a custom path, FallbackToLogsOnError"
$K apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: termmsg}
spec:
  restartPolicy: Never
  containers:
  - {name: file, image: busybox, command: [sh, -c, 'printf "{\"ok\":1}" > /dev/termination-log']}
  - {name: custom, image: busybox, terminationMessagePath: /tmp/msg, command: [sh, -c, 'printf custom > /tmp/msg']}
  - {name: invol, image: busybox, terminationMessagePath: /out/result, command: [sh, -c, 'printf in-volume > /out/result'],
     volumeMounts: [{name: out, mountPath: /out}]}
  - {name: logs, image: busybox, terminationMessagePolicy: FallbackToLogsOnError, command: [sh, -c, 'echo noise; echo "backup failed: disk full"; exit 3']}
  volumes: [{name: out, emptyDir: {}}]
YAML
until_ok 30 sh -c "[ \"\$(kubectl -n $NS get pod termmsg -o 'jsonpath={.status.phase}')\" = Failed ]" || fail "pod termmsg not Failed"
msg() { $K get pod termmsg -o "jsonpath={.status.containerStatuses[?(@.name==\"$1\")].state.terminated.message}"; }
[ "$(msg file)" = '{"ok":1}' ] || fail "message of container file: $(msg file)"
[ "$(msg custom)" = custom ] || fail "message of container custom: $(msg custom)"
[ "$(msg invol)" = in-volume ] || fail "message of container invol: $(msg invol)"
[ "$(msg logs)" = "$(printf 'noise\nbackup failed: disk full')" ] || fail "message of container logs: $(msg logs)"
[ -z "$($K get pod once -o 'jsonpath={.status.containerStatuses[0].state.terminated.message}')" ] || fail "pod once (policy File) has a message"

step "delete namespace $NS: pods stopped, PVs and their directories removed"
PVS=$($K get pvc -o 'jsonpath={.items[*].spec.volumeName}')
kubectl delete namespace "$NS" --timeout=180s >/dev/null || fail "namespace deletion"
for pv in $PVS; do
  until_ok 60 sh -c "! kubectl get pv $pv" || fail "pv $pv still exists"
  [ ! -e "$RAFTKV_STATE/pv/$pv" ] || fail "directory of $pv still exists"
done

step "done"
printf '[smoke] all steps passed in %ds\n' $((SECONDS - T_ALL))
trap - EXIT
printf 'smoke: %d passed, 0 failed\n' $((PASSED - 1))
