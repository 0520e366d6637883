"""A small schema registry for the Kafka tests: the subset of Confluent's REST API that a
serializer and rimd use (no Confluent-compatible registry server can be installed here).

    POST /subjects/{subject}/versions      {"schema": "..."} -> {"id": N}  (same text, same id)
    POST /subjects/{subject}               lookup            -> {"subject", "id", "version", "schema"}
    GET  /schemas/ids/{id}                                   -> {"schema": "..."}
    GET  /subjects/{subject}/versions/latest                 -> {"subject", "id", "version", "schema"}
    GET  /subjects/{subject}/versions/{n}                    -> the same for version n

Binds 127.0.0.1 on the port given (0: any free port) and prints PORT=<port> once listening.
Standard library only.
"""
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
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

    def do_POST(self):
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
        path = self.path.split("?")[0]
        m = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if m:
            text = SCHEMAS.get(int(m.group(1)))
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


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"PORT={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
