#!/usr/bin/env bash
# The container image of airlift, without a Docker daemon or any image tool: an OCI image layout
# in a tar, one layer holding the static binary (/usr/local/bin/airlift) and Debian's CA bundle
# (/etc/ssl/certs/ca-certificates.crt, for the registry client's HTTPS), nothing else, named
# localhost/airlift:<version> (io.containerd.image.name and a full org.opencontainers.image.ref.name,
# so `airlift import` and `ctr images import` name it alike). airlift imports it like any other
# archive: the first image an air-gapped cluster imports is airlift.
#
#   bash integration/image.sh BINARY OUTDIR     # -> OUTDIR/airlift-<version>-image.oci.tar
#
# BINARY must be static (RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked
# --target x86_64-unknown-linux-gnu -p airlift): the image has no libc. Reproducible: the same
# binary, CA bundle and SOURCE_DATE_EPOCH (default: the last commit's time) give the same bytes
# (fixed mtimes, owners and order; gzip without a name or time). AIRLIFT_VERSION overrides the
# version read from Cargo.toml; AIRLIFT_CA_BUNDLE the CA bundle.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

[[ $# -eq 2 ]] || {
    echo "usage: $0 BINARY OUTDIR" >&2
    exit 2
}
binary="$1"
outdir="$2"
[[ -x "$binary" ]] || { echo "image.sh: $binary is not an executable" >&2; exit 1; }
if command -v file >/dev/null && ! file -b "$binary" | grep -q 'static'; then
    echo "image.sh: $binary is not statically linked ($(file -b "$binary" | cut -d, -f1-4)): the image has no libc" >&2
    exit 1
fi
ca="${AIRLIFT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -f "$ca" ]] || { echo "image.sh: no CA bundle $ca (apt-get install ca-certificates)" >&2; exit 1; }
version="${AIRLIFT_VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")}"
[[ -n "$version" ]] || { echo "image.sh: no version in Cargo.toml" >&2; exit 1; }
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}"
mkdir -p "$outdir"
out="$outdir/airlift-$version-image.oci.tar"

python3 - "$binary" "$ca" "$version" "$epoch" "$out" <<'EOF'
import datetime, gzip, hashlib, io, json, os, sys, tarfile

binary, ca, version, epoch, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
name = f"localhost/airlift:{version}"

def entry(tar, path, mode, data=None):
    info = tarfile.TarInfo(path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "root", "root"
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            entry(tar, *e)
    return buf.getvalue()

# The one layer: the binary and the CA bundle, with their directories.
layer = tar_bytes([
    ("etc", 0o755), ("etc/ssl", 0o755), ("etc/ssl/certs", 0o755),
    ("etc/ssl/certs/ca-certificates.crt", 0o644, open(ca, "rb").read()),
    ("tmp", 0o1777),
    ("usr", 0o755), ("usr/local", 0o755), ("usr/local/bin", 0o755),
    ("usr/local/bin/airlift", 0o755, open(binary, "rb").read()),
])
gz = io.BytesIO()
with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=9) as g:
    g.write(layer)
layer_gz = gz.getvalue()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def js(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()

created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
labels = {
    "org.opencontainers.image.title": "airlift",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.description": "Container images into containerd from archives on disk",
}
config = js({
    "architecture": "amd64", "os": "linux", "created": created,
    "config": {
        "Entrypoint": ["/usr/local/bin/airlift"], "Cmd": ["serve"],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        "Labels": labels,
    },
    "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
    "history": [{"created": created, "created_by": "integration/image.sh"}],
})
manifest = js({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer_gz), "size": len(layer_gz)}],
    "annotations": {"org.opencontainers.image.created": created, **labels},
})
index = js({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest), "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
    }],
})
blobs = sorted((digest(b).split(":")[1], b) for b in (config, manifest, layer_gz))
archive = tar_bytes(
    [("blobs", 0o755), ("blobs/sha256", 0o755)]
    + [(f"blobs/sha256/{h}", 0o644, b) for h, b in blobs]
    + [("index.json", 0o644, index), ("oci-layout", 0o644, js({"imageLayoutVersion": "1.0.0"}))]
)
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(archive)
os.replace(tmp, out)
print(f"{out}: {name} manifest {digest(manifest)}, layer {len(layer_gz)} bytes", file=sys.stderr)
EOF
echo "$out"
