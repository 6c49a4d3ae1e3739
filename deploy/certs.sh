#!/usr/bin/env bash
# Makes a development CA and certificates for mutual TLS between the coordinator and the
# nodes, and for TLS from the coordinator to its clients and between its replicas:
# certs.sh OUT_DIR NODE_CODE...
#   OUT_DIR/ca.pem                           the CA every side trusts (keep ca-key.pem away)
#   OUT_DIR/coordinator.pem, coordinator-key.pem   the coordinator's certificate, naming
#                                            `sunlight-coordinator` (client and server)
#   OUT_DIR/<code>.pem, <code>-key.pem       each node's server certificate
# Node certificates name the host `sunlight-node` (and localhost, 127.0.0.1); the
# coordinator checks that name. For development only: production keys come from the
# city's own CA.
set -euo pipefail
out=${1:?usage: certs.sh OUT_DIR NODE_CODE...}
shift
mkdir -p "$out"
cd "$out"
days=825
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days "$days" \
  -subj "/CN=sunlight development CA" 2>/dev/null

issue() { # name, subject CN, extensions
  openssl req -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$1.pem" \
    -days "$days" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

issue coordinator "sunlight coordinator" \
  "extendedKeyUsage=clientAuth,serverAuth
subjectAltName=DNS:sunlight-coordinator,DNS:localhost,IP:127.0.0.1"
for code in "$@"; do
  issue "$code" "sunlight node $code" \
    "extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:sunlight-node,DNS:localhost,IP:127.0.0.1"
done
echo "wrote the CA, the coordinator's and $# node certificate(s) to $out"
