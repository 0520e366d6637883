"""A small schema registry for the Kafka tests: the subset of Confluent's REST API that a
serializer and rimd use (no Confluent-compatible registry server can be installed here).

    POST /subjects/{subject}/versions      {"schema": "..."} -> {"id": N}  (same text, same id)
    POST /subjects/{subject}               lookup            -> {"subject", "id", "version", "schema"}
    GET  /schemas/ids/{id}                                   -> {"schema": "..."}
    GET  /subjects/{subject}/versions/latest                 -> {"subject", "id", "version", "schema"}
    GET  /subjects/{subject}/versions/{n}                    -> the same for version n

    GET  /_requests                                          -> {"schema_ids": N} (lookups so far)

For the client's tests, ids 666 (200 with a body that is not JSON), 667 (200 with 2 MiB)
and 668 (never answers) misbehave.

    registry.py PORT [--basic USER:PASSWORD | --bearer TOKEN] [--tls-dir DIR] [--schema FILE]

--basic/--bearer: every request must carry these credentials (else 401). --tls-dir: serve
https with a certificate for 127.0.0.1 and localhost signed by a CA made on the spot;
DIR/ca.pem is the CA for the client (made with `cryptography`, in the venv). --schema:
registers FILE under subject "preloaded" first (id 1).

Binds 127.0.0.1 on the port given (0: any free port) and prints PORT=<port> once listening.
"""
import argparse
import base64
import json
import os
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
AUTH = None  # the Authorization header every request must carry, if any
LOOKUPS = [0]
SCHEMAS = {}  # id -> schema text
IDS = {}  # schema text -> id
SUBJECTS = {}  # subject -> [id, ...] (versions in order)


def register(subject, text):
    with LOCK:
        sid = IDS.get(text)
        if sid is None:
            sid = len(SCHEMAS) + 1
            SCHEMAS[sid] = text
            IDS[text] = sid
        versions = SUBJECTS.setdefault(subject, [])
        if sid not in versions:
            versions.append(sid)
        return sid, versions.index(sid) + 1


def version_body(subject, version):
    versions = SUBJECTS.get(subject, [])
    if version == "latest":
        version = len(versions)
    else:
        version = int(version)
    if not 1 <= version <= len(versions):
        return None
    sid = versions[version - 1]
    return {"subject": subject, "id": sid, "version": version, "schema": SCHEMAS[sid], "schemaType": "AVRO"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("registry: " + (fmt % args) + "\n")

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self, what):
        self.reply(404, {"error_code": 40403, "message": f"{what} not found"})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def authorized(self):
        if AUTH is None or self.headers.get("Authorization") == AUTH:
            return True
        self.reply(401, {"error_code": 401, "message": "unauthorized"})
        return False

    def do_POST(self):
        if not self.authorized():
            return
        path = self.path.split("?")[0]
        m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        if m:
            sid, _ = register(m.group(1), self.body()["schema"])
            return self.reply(200, {"id": sid})
        m = re.fullmatch(r"/subjects/([^/]+)", path)
        if m:
            text = self.body()["schema"]
            with LOCK:
                sid = IDS.get(text)
                versions = SUBJECTS.get(m.group(1), [])
            if sid is None or sid not in versions:
                return self.not_found("schema")
            return self.reply(200, version_body(m.group(1), versions.index(sid) + 1))
        self.not_found(path)

    def do_GET(self):
        if not self.authorized():
            return
        path = self.path.split("?")[0]
        if path == "/_requests":
            return self.reply(200, {"schema_ids": LOOKUPS[0]})
        m = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if m:
            with LOCK:
                LOOKUPS[0] += 1
            sid = int(m.group(1))
            if sid in (666, 667):
                data = b"<html>not json</html>" if sid == 666 else b"x" * (2 << 20)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if sid == 668:
                time.sleep(60)
                return
            text = SCHEMAS.get(sid)
            if text is None:
                return self.not_found("schema id")
            return self.reply(200, {"schema": text, "schemaType": "AVRO"})
        m = re.fullmatch(r"/subjects/([^/]+)/versions/(latest|\d+)", path)
        if m:
            body = version_body(m.group(1), m.group(2))
            return self.reply(200, body) if body else self.not_found("version")
        if path == "/subjects":
            return self.reply(200, sorted(SUBJECTS))
        self.not_found(path)


def make_tls(dirname):
    """A CA and a certificate for 127.0.0.1/localhost it signs; returns (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rimd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {name: os.path.join(dirname, name) for name in ("ca.pem", "cert.pem", "key.pem")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths["cert.pem"], "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(paths["key.pem"], "wb") as f:
        f.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths["cert.pem"], paths["key.pem"]


def main():
    global AUTH
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int, nargs="?", default=0)
    ap.add_argument("--basic")
    ap.add_argument("--bearer")
    ap.add_argument("--tls-dir")
    ap.add_argument("--schema")
    args = ap.parse_args()
    if args.basic:
        AUTH = "Basic " + base64.b64encode(args.basic.encode()).decode()
    elif args.bearer:
        AUTH = "Bearer " + args.bearer
    if args.schema:
        with open(args.schema) as f:
            register("preloaded", f.read())
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls_dir:
        cert, key = make_tls(args.tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
