#!/bin/bash
# Regenerates the cosign and openssl fixtures of the verification tests (see README.md).
# Needs cosign 3.1.1, openssl, docker-registry (Debian's, 2.8), skopeo, curl, jq and python3.
# Run from anywhere: ./make.sh [COSIGN]. Writes into this directory; works offline.
set -euo pipefail
shopt -s inherit_errexit
COSIGN=${1:-cosign}
OUT=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
PORT=15790
REG=127.0.0.1:$PORT
export COSIGN_PASSWORD= HOME=$W/home SIGSTORE_NO_CACHE=1
mkdir -p "$HOME"
CO=(--use-signing-config=false --tlog-upload=false --allow-http-registry --allow-insecure-registry -y)

# A loopback registry.
cat >"$W/reg.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/reg}}
http: {addr: $REG}
EOF
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
REGPID=$!
trap 'rc=$?; kill $REGPID; [ $rc = 0 ] || tail -20 "$W/cosign.log"; rm -rf "$W"' EXIT
for _ in $(seq 50); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

# Two tiny OCI images (one layer each), pushed by digest-preserving copies.
image() { # NAME CONTENT -> prints the manifest digest
  local d=$W/img-${1//[\/:]/-}
  mkdir -p "$d/blobs/sha256" "$d/root"
  echo "$2" >"$d/root/hello"
  tar -C "$d/root" -cf - hello | gzip -n >"$d/layer"
  local lh; lh=$(sha256sum <"$d/layer" | cut -d' ' -f1)
  local dh; dh=$(gzip -dc "$d/layer" | sha256sum | cut -d' ' -f1)
  cp "$d/layer" "$d/blobs/sha256/$lh"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$dh" >"$d/config"
  local ch; ch=$(sha256sum <"$d/config" | cut -d' ' -f1)
  cp "$d/config" "$d/blobs/sha256/$ch"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$ch" "$(stat -c%s "$d/config")" "$lh" "$(stat -c%s "$d/layer")" >"$d/manifest"
  local mh; mh=$(sha256sum <"$d/manifest" | cut -d' ' -f1)
  cp "$d/manifest" "$d/blobs/sha256/$mh"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d}]}' \
    "$mh" "$(stat -c%s "$d/manifest")" >"$d/index.json"
  skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$d" "docker://$REG/$1" >&2
  echo "sha256:$mh"
}
D1=$(image library/busybox:1.36 "airlift verification fixture")
D2=$(image evil/busybox:1.36 "another image")
echo "$D1" >"$OUT/image.digest"
echo "$D2" >"$OUT/other-image.digest"

manifest() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' "http://$REG/v2/$1/manifests/$2"; }
blob() { curl -sf "http://$REG/v2/$1/blobs/$2"; }
# The last layer of an image's .sig manifest: NAME -> NAME.payload, NAME.annotations.json
last_sig() {
  local m; m=$(manifest library/busybox "${D1/:/-}.sig")
  blob library/busybox "$(jq -r '.layers[-1].digest' <<<"$m")" >"$OUT/$1.payload"
  jq '.layers[-1].annotations' <<<"$m" >"$OUT/$1.annotations.json"
}
# The bundle referrer the last signing added to the tag schema index (whose order is not the
# order of signing): NAME -> NAME.bundle.json, NAME.manifest.json
SEEN=
last_bundle() {
  local d
  d=$(manifest library/busybox "${D1/:/-}" | jq -r '.manifests[].digest' | grep -vxF -e x $SEEN)
  SEEN="$SEEN -e $d"
  local m; m=$(manifest library/busybox "$d")
  echo "$m" >"$OUT/$1.manifest.json"
  blob library/busybox "$(jq -r '.layers[0].digest' <<<"$m")" >"$OUT/$1.bundle.json"
}

cd "$W"
# Keys. site: P-256 made by openssl (its PKCS#8 lets the tests sign payloads of their own), imported
# into cosign. other: a second cosign key. rsa, ed25519, p384: the other key types cosign signs with.
# p521: refused at load. rekor: the test's own transparency log (signs forged SETs).
pkey() { # NAME ALG-ARGS...
  local n=$1; shift
  openssl genpkey "$@" -out "$n.pem" 2>/dev/null
  openssl pkey -in "$n.pem" -pubout -out "$OUT/$n.pub"
}
pkey site -algorithm EC -pkeyopt ec_paramgen_curve:P-256
pkey rsa -algorithm RSA -pkeyopt rsa_keygen_bits:2048
pkey ed25519 -algorithm ED25519
pkey p384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384
pkey p521 -algorithm EC -pkeyopt ec_paramgen_curve:P-521
pkey rekor -algorithm EC -pkeyopt ec_paramgen_curve:P-256
openssl pkcs8 -topk8 -nocrypt -in site.pem -outform DER -out "$OUT/site.p8"
openssl pkcs8 -topk8 -nocrypt -in rekor.pem -outform DER -out "$OUT/rekor.p8"
for k in site rsa ed25519 p384; do
  "$COSIGN" import-key-pair --key $k.pem --output-key-prefix cosign-$k >/dev/null
done
"$COSIGN" generate-key-pair --output-key-prefix other >/dev/null
cp other.pub "$OUT/other.pub"

# A CA: root → intermediate → leaf (code signing, an email and a host name, both Fulcio issuer
# extensions); another root with the same name and another key; a TLS-only leaf (no code signing).
cat >int.ext <<'EOF'
basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
cat >leaf.ext <<'EOF'
basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=codeSigning
subjectAltName=email:signer@example.com,DNS:signer.example.com
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
1.3.6.1.4.1.57264.1.1=DER:68747470733a2f2f6973737565722e6578616d706c652e636f6d
1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:https://issuer.example.com
EOF
sed -e 's/^extendedKeyUsage=.*/extendedKeyUsage=serverAuth/' leaf.ext >tls.ext
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ec root
ec other-root
ec int
ec leaf
openssl req -x509 -new -key root.key -subj "/CN=airlift test root" -days 3650 -out root.pem
openssl req -x509 -new -key other-root.key -subj "/CN=airlift test root" -days 3650 -out other-root.pem
openssl req -new -key int.key -subj "/CN=airlift test intermediate" -out int.csr
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days 3650 -extfile int.ext -out int.pem 2>/dev/null
openssl req -new -key leaf.key -subj "/CN=signer" -out leaf.csr
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -days 365 -extfile leaf.ext -out leaf.pem 2>/dev/null
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -days 365 -extfile tls.ext -out "$OUT/tls-leaf.pem" 2>/dev/null
cat int.pem root.pem >chain.pem
cp root.pem other-root.pem int.pem leaf.pem "$OUT/"
openssl pkcs8 -topk8 -nocrypt -in leaf.key -outform DER -out "$OUT/leaf.p8"
"$COSIGN" import-key-pair --key leaf.key --output-key-prefix cosign-leaf >/dev/null

# Simple signing (.sig), one layer per signature, each kept as payload + annotations.
sign() { "$COSIGN" sign "${CO[@]}" --new-bundle-format=false "$@" >/dev/null 2>>"$W/cosign.log"; }
sign --key cosign-site.key "$REG/library/busybox@$D1"
last_sig sig-site
sign --key cosign-site.key --sign-container-identity=docker.io/library/busybox:1.36 "$REG/library/busybox@$D1"
last_sig sig-site-identity
sign --key cosign-rsa.key "$REG/library/busybox@$D1"
last_sig sig-rsa
sign --key cosign-ed25519.key "$REG/library/busybox@$D1"
last_sig sig-ed25519
# cosign signs with Ed25519ph for Ed25519 keys, which containers/image (and airlift) do not
# verify; the same payload signed with pure Ed25519, as they do.
cp "$OUT/sig-ed25519.payload" "$OUT/sig-ed25519-pure.payload"
openssl pkeyutl -sign -inkey ed25519.pem -rawin -in "$OUT/sig-ed25519.payload" | base64 -w0 |
  jq -R '{"dev.cosignproject.cosign/signature": .}' >"$OUT/sig-ed25519-pure.annotations.json"
sign --key cosign-p384.key "$REG/library/busybox@$D1"
last_sig sig-p384
sign --key cosign-leaf.key --certificate leaf.pem --certificate-chain chain.pem "$REG/library/busybox@$D1"
last_sig sig-pki
manifest library/busybox "${D1/:/-}.sig" | jq . >"$OUT/sig.manifest.json"

# Bundles (OCI 1.1 referrers; this registry has no referrers API, so the tag schema index).
bsign() { "$COSIGN" sign "${CO[@]}" "$@" >/dev/null 2>>"$W/cosign.log"; }
bsign --key cosign-site.key "$REG/library/busybox@$D1"
last_bundle bundle-site
bsign --key cosign-leaf.key --certificate leaf.pem --certificate-chain chain.pem "$REG/library/busybox@$D1"
last_bundle bundle-pki

# Fulcio: cosign cannot get a Rekor SET offline, so the test is the log. A payload from cosign,
# signed by the leaf's key; a hashedrekord entry for it, its SET signed by the rekor key, with
# integratedTime a day after the leaf's notBefore; attached with cosign.
"$COSIGN" generate "$REG/library/busybox@$D1" >fpayload.json
openssl dgst -sha256 -sign leaf.key fpayload.json | base64 -w0 >fsig.b64
NB=$(date -d "$(openssl x509 -in leaf.pem -noout -startdate | cut -d= -f2)" +%s)
python3 - "$((NB + 86400))" <<'EOF'
import base64, hashlib, json, subprocess, sys
t = int(sys.argv[1])
payload = open("fpayload.json", "rb").read()
sig = open("fsig.b64").read().strip()
cert = open("leaf.pem", "rb").read()
body = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
    "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
    "signature": {"content": sig, "publicKey": {"content": base64.b64encode(cert).decode()}}}}
der = subprocess.run(["openssl", "pkey", "-in", "rekor.pem", "-pubout", "-outform", "DER"],
                     capture_output=True, check=True).stdout
p = {"body": base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode(),
     "integratedTime": t, "logIndex": 1, "logID": hashlib.sha256(der).hexdigest()}
canon = json.dumps(p, sort_keys=True, separators=(",", ":")).encode()  # RFC 8785 for this ASCII
set_ = subprocess.run(["openssl", "dgst", "-sha256", "-sign", "rekor.pem"], input=canon,
                      capture_output=True, check=True).stdout
json.dump({"base64Signature": sig, "cert": base64.b64encode(cert).decode(),
           "rekorBundle": {"SignedEntryTimestamp": base64.b64encode(set_).decode(), "Payload": p}},
          open("resp.json", "w"))
EOF
"$COSIGN" attach signature --payload fpayload.json --signature fsig.b64 --certificate leaf.pem \
  --certificate-chain chain.pem --rekor-response resp.json "$REG/library/busybox@$D1" >/dev/null 2>>"$W/cosign.log"
last_sig sig-fulcio
echo "wrote fixtures into $OUT"
