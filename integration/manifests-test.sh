#!/usr/bin/env bash
# Validates the Kubernetes manifests of config/kubernetes/ offline, in about a second once
# provisioned: each object against Kubernetes 1.36's schemas with strict checking (an unknown or
# misspelt field fails), by kubernetes-validate from PyPI (it bundles the schemas; kubectl's
# `create --dry-run=client --validate=strict` needs an API server for them). Then airlift's own
# checks: the ConfigMap's config.toml parses and names the paths the pod mounts, the four host
# paths are mounted, nothing privileged. Proves the validator can fail: a misspelt field and a
# wrongly typed one in a copy of each manifest must be refused.
#
# Provisioning: kubernetes-validate into $CACHE/kubernetes-validate (a venv, made once; CACHE as
# in provision.sh: $AIRLIFT_CACHE or .cache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${AIRLIFT_CACHE:-.cache}"
[[ "$CACHE" == /* ]] || CACHE="$PWD/$CACHE"
venv="$CACHE/kubernetes-validate"
version=1.37.0 # bundles the schemas of Kubernetes 1.24 to 1.37
k8s=1.36.0

fail() {
    printf 'manifests-test: FAIL: %s\n' "$*" >&2
    exit 1
}
ok() { printf 'manifests-test: ok: %s\n' "$*" >&2; }

if [[ ! -x "$venv/bin/kubernetes-validate" ]] ||
    [[ "$("$venv/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "$version" ]]; then
    echo "manifests-test: installing kubernetes-validate $version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes-validate==$version"
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" "$@"; }

mapfile -t manifests < <(find config/kubernetes -name '*.yaml' | sort)
((${#manifests[@]})) || fail "no manifests in config/kubernetes"

validate "${manifests[@]}" || fail "kubernetes-validate refused a manifest"
ok "kubernetes-validate --strict -k $k8s: ${manifests[*]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for m in "${manifests[@]}"; do
    sed 's/readOnlyRootFilesystem:/readOnlyRootFilesytem:/' "$m" >"$tmp/misspelt.yaml"
    cmp -s "$m" "$tmp/misspelt.yaml" && fail "$m: no field to misspell"
    if validate "$tmp/misspelt.yaml" >/dev/null 2>&1; then
        fail "kubernetes-validate accepted a misspelt field (readOnlyRootFilesytem) in $m"
    fi
    sed 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: sixty/' "$m" >"$tmp/typed.yaml"
    if validate "$tmp/typed.yaml" >/dev/null 2>&1; then
        fail "kubernetes-validate accepted a string for terminationGracePeriodSeconds in $m"
    fi
done
ok "a misspelt field and a wrongly typed one are refused in each manifest"

# airlift's own checks, on the parsed objects (PyYAML comes with kubernetes-validate).
"$venv/bin/python" - "${manifests[@]}" <<'EOF'
import sys, tomllib, yaml

def fail(msg):
    sys.exit(f"manifests-test: FAIL: {msg}")

for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {d["kind"]: d for d in docs}
    if set(kinds) != {"ConfigMap", "DaemonSet"}:
        fail(f"{path}: expected a ConfigMap and a DaemonSet, got {sorted(kinds)}")
    cfg = tomllib.loads(kinds["ConfigMap"]["data"]["config.toml"])
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for mp, name in mounts.items():
        if name in host and host[name] != mp:
            fail(f"{path}: {name} mounts host {host[name]} at {mp}: airlift needs the host's paths")
    k3s = "/k3s/" in path
    content = ("/var/lib/rancher/k3s/agent/containerd" if k3s else "/var/lib/containerd") + "/io.containerd.content.v1.content"
    sock_dir = cfg["address"].rsplit("/", 1)[0]
    for want in [sock_dir, content, cfg["state_dir"], *cfg["images_dirs"], cfg["socket"].rsplit("/", 1)[0]]:
        if want not in host.values():
            fail(f"{path}: {want} is not a hostPath mount")
    if k3s and cfg["address"] != "/run/k3s/containerd/containerd.sock":
        fail(f"{path}: k3s's socket expected, got {cfg['address']}")
    sc = c["securityContext"]
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation", True) or sc["capabilities"]["drop"] != ["ALL"]:
        fail(f"{path}: more privilege than the job needs: {sc}")
    if pod.get("hostPID") or pod.get("hostNetwork") or pod.get("hostIPC"):
        fail(f"{path}: host namespaces are not needed")
    if c["command"][0] != "/usr/local/bin/airlift" or c["args"][0] != "serve":
        fail(f"{path}: not airlift serve: {c['command']} {c['args']}")
print("manifests-test: ok: config.toml parses; socket dir, content root, state and images dirs mounted at the host's paths; no privilege", file=sys.stderr)
EOF
echo "manifests-test: all passed" >&2
