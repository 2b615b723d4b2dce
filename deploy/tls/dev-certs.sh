#!/bin/sh
# Makes the compose stack's development certificates, once: a CA, a
# server certificate for tallyd and one for PostgreSQL, and a client
# certificate for trying mutual TLS. Run by the `certs` service (Alpine,
# as root) into the `tls` volume; a volume that already has a CA is left
# as it is, so restarts keep the same certificates. To start over:
#
#   docker compose -f deploy/compose.yaml down -v
#
# For development only: the CA's key sits next to what it signed.
set -eu

out="${1:-/tls}"
if [ -s "$out/ca.crt" ]; then
  echo "dev-certs: $out already has a CA; keeping it"
  exit 0
fi
command -v openssl >/dev/null 2>&1 || apk add --no-cache openssl >/dev/null
mkdir -p "$out"
cd "$out"

# key FILE: a new P-256 private key.
key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# issue NAME CN EXTENSIONS: NAME.crt and NAME.key, signed by the CA.
issue() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 825 -sha256 -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}

key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=tally dev CA" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

# tallyd, as the other services and the host reach it.
issue tallyd tallyd "subjectAltName=DNS:tallyd,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
# PostgreSQL, as tallyd reaches it (sslmode=verify-full checks the name).
issue postgres postgres "subjectAltName=DNS:postgres,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
# A caller, for --tls-client-ca (TALLY_TLS_CLIENT_CA=/tls/ca.crt).
issue client dev-client "extendedKeyUsage=clientAuth"

# Each server reads its own key as the user it runs as: tallyd's image
# runs as 65532, PostgreSQL's as postgres (999), which wants 0600.
chown 65532:65532 tallyd.key
chown 999:999 postgres.key
chmod 600 tallyd.key postgres.key
chmod 644 ca.crt tallyd.crt postgres.crt client.crt client.key
chmod 600 ca.key
echo "dev-certs: made a CA and certificates for tallyd, postgres and a client in $out"
